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


def other_indexes(table: str, keep: str) -> tuple[str, ...]:
    """Indexes of `table` that can be dropped for a plan test: all but `keep`, the primary key and
    indexes that back a constraint."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT index.relname
            FROM pg_index AS x
            JOIN pg_class AS index ON index.oid = x.indexrelid
            JOIN pg_class AS tbl ON tbl.oid = x.indrelid
            WHERE tbl.relname = %s AND index.relname <> %s AND NOT x.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = x.indexrelid)
            """,
            [table, keep],
        )
        return tuple(row[0] for row in cursor.fetchall())


def index_scans(
    queryset, *, drop: tuple[str, ...] = (), bitmap_only: bool = False, only: str | None = None
) -> list[IndexScan]:
    """The plan nodes of `queryset` that read an index, with seq scans off and `drop` dropped.

    bitmap_only also turns plain index scans off: GIN indexes serve only bitmap scans, and on a
    tiny table a full scan of some btree index is otherwise an equally cheap stand-in for the
    disabled sequential scan.
    """
    if only is not None:
        # On a tiny table the planner may read any index whole as a stand-in for the disabled
        # sequential scan; with only `only` left, the test asks whether it can serve the query.
        drop = (*drop, *other_indexes(queryset.model._meta.db_table, keep=only))
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
