"""An execution's results in one streamed file: every match and every exception, with both
sides' external ids and amounts, as CSV or NDJSON.

PostgreSQL writes the file itself (`COPY (query) TO STDOUT`), and the web process passes it on in
blocks of EXPORT_BLOCK_BYTES: memory stays flat whatever the row count, and no page-by-page
pulling runs into the API's rate limit. One COPY is one statement, so it works unchanged behind
PgBouncer in transaction mode (where a named server-side cursor would not survive between
fetches: Django's DISABLE_SERVER_SIDE_CURSORS exists for that).
"""

from collections.abc import Iterator

from django.conf import settings
from django.db import connection, transaction
from psycopg import sql

EXPORT_AS = ("csv", "ndjson")
EXPORT_BLOCK_BYTES = 64 * 1024
EXPORT_COLUMNS = (
    "kind",
    "match_id",
    "exception_id",
    "pass_or_reason",
    "status",
    "confidence",
    "left_external_ids",
    "right_external_ids",
    "left_amount",
    "right_amount",
    "currency",
    "at",
)

# Amounts and confidences are text, as everywhere in the API: exact in NDJSON too (a JSON number
# is a float to most readers). Matches first, then exceptions, each by id. A match's external ids
# are looked up by primary key from its id arrays (`;`-joined, sorted); an exception is one record.
_ROWS = """
    SELECT 'match' AS kind, m.id AS match_id, NULL::bigint AS exception_id, m.pass_name AS pass_or_reason,
           m.status, m.confidence::text, l.ids AS left_external_ids, r.ids AS right_external_ids,
           m.left_amount::text, m.right_amount::text, coalesce(l.currency, r.currency) AS currency, m.matched_at AS at
    FROM reconciliation_match m
    CROSS JOIN LATERAL (
        SELECT string_agg(x.external_id, ';' ORDER BY x.external_id) AS ids, min(x.currency) AS currency
        FROM reconciliation_record x WHERE x.id = ANY(m.left_ids)
    ) l
    CROSS JOIN LATERAL (
        SELECT string_agg(x.external_id, ';' ORDER BY x.external_id) AS ids, min(x.currency) AS currency
        FROM reconciliation_record x WHERE x.id = ANY(m.right_ids)
    ) r
    WHERE m.execution_id = {execution_id} AND m.tenant_id = {tenant_id}
    UNION ALL
    SELECT 'exception', NULL, u.id, u.reason, CASE WHEN u.resolved_at IS NULL THEN 'open' ELSE 'resolved' END,
           NULL, CASE WHEN u.side = 'left' THEN x.external_id END, CASE WHEN u.side = 'right' THEN x.external_id END,
           CASE WHEN u.side = 'left' THEN u.amount::text END, CASE WHEN u.side = 'right' THEN u.amount::text END,
           x.currency, u.created_at
    FROM reconciliation_unmatched u
    JOIN reconciliation_record x ON x.id = u.record_id
    WHERE u.execution_id = {execution_id} AND u.tenant_id = {tenant_id}
"""

_CSV = "COPY ({rows} ORDER BY 1 DESC, 2, 3) TO STDOUT WITH (FORMAT csv, HEADER true)"
# One JSON object per line. CSV format with a quote and a delimiter that JSON never contains
# unescaped (control characters are \\u-escaped in JSON): each line goes out exactly as
# PostgreSQL wrote it, where text format would double every backslash of the JSON.
_NDJSON = (
    "COPY (SELECT row_to_json(t)::text FROM ({rows} ORDER BY 1 DESC, 2, 3) t) TO STDOUT "
    "WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
)


def execution_export(*, execution_id: int, tenant_id: int, export_as: str) -> Iterator[bytes]:
    """The export's bytes, block by block. Runs its own transaction while the client reads, with
    RECONCILIATION_EXPORT_TIMEOUT_S in place of the connections' statement timeout (a million rows
    to a slow client take longer than that)."""
    rows = sql.SQL(_ROWS).format(execution_id=sql.Literal(execution_id), tenant_id=sql.Literal(tenant_id))
    query = sql.SQL(_CSV if export_as == "csv" else _NDJSON).format(rows=rows)
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true)", [f"{settings.RECONCILIATION_EXPORT_TIMEOUT_S}s"]
        )
        block = bytearray()
        with cursor.copy(query) as copy:
            # libpq hands over one row at a time: batched, so the server writes a few large chunks.
            for row in copy:
                block += row
                if len(block) >= EXPORT_BLOCK_BYTES:
                    yield bytes(block)
                    block.clear()
        if block:
            yield bytes(block)
