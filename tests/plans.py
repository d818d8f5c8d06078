"""Reading query plans in tests: which index a query's plan reads, and with what condition.

Test tables hold a handful of rows, on which a sequential scan is always cheapest; plans are read
with `SET LOCAL enable_seqscan = off` inside a savepoint that is rolled back, which shows which
index *can* serve a query (not what PostgreSQL would pick on production-sized data).
"""

import json
from dataclasses import dataclass

from django.db import connection, transaction


@dataclass(frozen=True)
class IndexScan:
    index: str
    node_type: str
    index_cond: str


def _walk(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def index_scans(queryset, *, drop: tuple[str, ...] = (), bitmap_only: bool = False) -> list[IndexScan]:
    """The plan nodes of `queryset` that read an index, with seq scans off and `drop` dropped.

    bitmap_only also turns plain index scans off: GIN indexes serve only bitmap scans, and on a
    tiny table a full scan of some btree index is otherwise an equally cheap stand-in for the
    disabled sequential scan.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        if bitmap_only:
            cursor.execute("SET LOCAL enable_indexscan = off")
        for name in drop:
            cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        (plan,) = json.loads(queryset.explain(format="json"))  # EXPLAIN's JSON is a one-item list
        transaction.set_rollback(True)
    return [
        IndexScan(index=node["Index Name"], node_type=node["Node Type"], index_cond=node.get("Index Cond", ""))
        for node in _walk(plan["Plan"])
        if "Index Name" in node
    ]


def scan_on(scans: list[IndexScan], index: str) -> IndexScan:
    matching = [scan for scan in scans if scan.index == index]
    assert matching, f"{index} not used; plan reads {[scan.index for scan in scans]}"
    return matching[0]
