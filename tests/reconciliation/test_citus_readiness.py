"""What Citus needs of the reconciliation schema, checked against the app registry and the catalog.

Citus cannot be installed here, so this test checks its rules on the schema PostgreSQL really
has (after migrations) and on the matcher's SQL text:

- every distributed table has `tenant_id` (the distribution column);
- every primary key and unique constraint/index of a distributed table includes `tenant_id`
  (Citus can only enforce uniqueness within one shard);
- every foreign key between distributed tables includes `tenant_id` on both sides (co-located
  shards); a foreign key to a reference table is allowed as it is;
- every join between distributed tables in reconciliation/engine/passes.py names `tenant_id` for each
  side (checked statically on the SQL text: see `_matcher_joins`).

Reference tables (replicated to every node) are named in REFERENCE_TABLES. What does not satisfy
the rules today is listed, exactly, in KNOWN_GAPS with the reason: the test fails when a new
gap appears AND when a listed one is fixed (remove it from the list then), so the list is the
to-do of docs/operations.md "Path to Citus", never stale.
"""

import ast
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection

import reconciliation.engine.passes
import reconciliation.engine.reasons

pytestmark = pytest.mark.django_db

# Small tables every node holds a copy of; joins to them never leave a shard.
REFERENCE_TABLES = {
    "reconciliation_tenant": "the tenants themselves: distribution values, not tenant data",
    "reconciliation_tenantmembership": "who belongs to which tenant, read per request across tenants "
    "(the user's tenant list); small",
}
# Models without a table (admin index entries).
NO_TABLE = {"ReviewQueue", "ExceptionsQueue"}

# Every primary key below is a single-column `id` (or `(id, partition key)`): Django foreign keys
# point at `id`, so making it (tenant_id, id) means composite keys on both ends of every relation,
# a migration per table (see docs/operations.md, step 3). Not trivial, so listed, not fixed.
PK_NOT_TENANT = "primary key without tenant_id: Django relations reference id alone"
KNOWN_GAPS = {
    # tenant_id missing altogether.
    ("reconciliation_matchedrecord", "column"): "a record's link to its match; keyed by record_id, the "
    "matcher writes millions of these narrow rows (tenant_id would widen each by 8 bytes)",
    # Primary keys.
    ("reconciliation_reconciliationjob", "pk"): PK_NOT_TENANT,
    ("reconciliation_record", "pk"): PK_NOT_TENANT,
    ("reconciliation_matchedrecord", "pk"): PK_NOT_TENANT,
    ("reconciliation_execution", "pk"): PK_NOT_TENANT,
    ("reconciliation_match", "pk"): "partitioned: (id, matched_at), the partition key must be in it",
    ("reconciliation_unmatched", "pk"): "partitioned: (id, created_at), the partition key must be in it",
    ("reconciliation_report", "pk"): PK_NOT_TENANT,
    ("reconciliation_webhookendpoint", "pk"): PK_NOT_TENANT,
    ("reconciliation_sourceprofile", "pk"): PK_NOT_TENANT,
    ("reconciliation_webhookdelivery", "pk"): PK_NOT_TENANT,
    # Unique constraints and indexes.
    ("reconciliation_record", "unique recon_record_job_side_extid_uniq"): "unique per job; a job belongs "
    "to one tenant, so it is unique per tenant too, but Citus needs the column itself",
    ("reconciliation_execution", "unique recon_exec_one_active_per_job"): "one active execution per job "
    "(partial unique on job_id)",
    ("reconciliation_report", "unique reconciliation_report_execution_id_key"): "one report per "
    "execution (OneToOneField)",
    # Foreign keys between distributed tables, on id alone.
    ("reconciliation_execution", "fk job_id"): "ForeignKey to ReconciliationJob",
    ("reconciliation_report", "fk execution_id"): "OneToOneField to Execution",
    ("reconciliation_webhookdelivery", "fk endpoint_id"): "ForeignKey to WebhookEndpoint",
    ("reconciliation_execution", "fk requested_by_id -> local auth_user"): "who started it; Citus has "
    "no foreign key from a distributed table to a local one (drop the constraint or make auth_user a "
    "reference table)",
    # The workflow's tables (issue 14), same patterns as the tables above.
    ("reconciliation_carriedforward", "pk"): PK_NOT_TENANT,
    ("reconciliation_carriedforward", "fk period_id"): "ForeignKey to Period",
    ("reconciliation_carriedforward", "unique recon_carry_period_unm_uniq"): "an exception is carried "
    "once per period; unique per period, so per tenant too",
    ("reconciliation_jobschedule", "pk"): PK_NOT_TENANT,
    ("reconciliation_jobschedule", "unique reconciliation_jobschedule_job_id_key"): "one schedule per job "
    "(OneToOneField)",
    ("reconciliation_jobschedule", "fk job_id"): "OneToOneField to ReconciliationJob",
    ("reconciliation_period", "pk"): PK_NOT_TENANT,
    ("reconciliation_period", "fk job_id"): "ForeignKey to ReconciliationJob",
    ("reconciliation_period", "fk signed_off_by_id -> local auth_user"): "who signed it off (as "
    "execution.requested_by)",
    ("reconciliation_period", "unique recon_period_job_start_uniq"): "one period per job and start date",
    ("reconciliation_scheduledrun", "pk"): PK_NOT_TENANT,
    ("reconciliation_scheduledrun", "fk job_id"): "ForeignKey to ReconciliationJob",
    ("reconciliation_scheduledrun", "unique recon_schedrun_job_slot_uniq"): "one run per job and slot",
    # Joins between distributed tables in the matcher's SQL (function: aliases without tenant_id).
    ("matching.load_working_set", "join m,r"): "open records: NOT EXISTS on matchedrecord, which has no tenant_id",
    ("matching.CLOSE_MATCHED_EXCEPTIONS_SQL", "join m"): "closes exceptions of matched records: matchedrecord has "
    "no tenant_id (unmatched u is pinned to the tenant)",
    ("matching.job_totals", "join m,r"): "summary counts: record LEFT JOIN matchedrecord",
}


def _tables() -> dict[str, str]:
    """{table: model name} of every reconciliation model that has a table."""
    tables = {}
    for model in apps.get_app_config("reconciliation").get_models():
        if not model._meta.managed:
            assert model.__name__ in NO_TABLE, f"{model.__name__} is unmanaged: a view? classify it"
            continue
        tables[model._meta.db_table] = model.__name__
    return tables


def _columns(names: list[int], table_oid: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum = ANY(%s)",
            [table_oid, list(names)],
        )
        by_number = dict(cursor.fetchall())
    return [by_number[n] for n in names]


def _catalog_gaps(distributed: set[str]) -> set[tuple[str, str]]:
    gaps = set()
    with connection.cursor() as cursor:
        for table in sorted(distributed):
            cursor.execute("SELECT %s::regclass::oid", [table])
            (oid,) = cursor.fetchone()
            cursor.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = %s AND attname = 'tenant_id' AND NOT attisdropped",
                [oid],
            )
            if cursor.fetchone() is None:
                gaps.add((table, "column"))
            # Primary key and every unique index (constraints and partial unique indexes alike).
            cursor.execute(
                """
                SELECT i.relname, x.indisprimary, x.indkey::int2[]
                FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = %s AND (x.indisunique OR x.indisprimary)
                """,
                [oid],
            )
            for name, primary, keys in cursor.fetchall():
                if "tenant_id" not in _columns([k for k in keys if k > 0], oid):
                    gaps.add((table, "pk" if primary else f"unique {name}"))
            cursor.execute(
                """
                SELECT confrelid::regclass::text, conkey, confkey
                FROM pg_constraint WHERE conrelid = %s AND contype = 'f'
                """,
                [oid],
            )
            for referenced, keys, referenced_keys in cursor.fetchall():
                if referenced in REFERENCE_TABLES:
                    continue  # distributed -> reference table: allowed as it is
                if referenced not in distributed:
                    # A platform table (auth_user...) stays local on the coordinator, and Citus
                    # has no foreign key from a distributed table to a local one.
                    gaps.add((table, f"fk {','.join(_columns(keys, oid))} -> local {referenced}"))
                    continue
                cursor.execute("SELECT %s::regclass::oid", [referenced])
                (referenced_oid,) = cursor.fetchone()
                local = _columns(keys, oid)
                remote = _columns(referenced_keys, referenced_oid)
                if "tenant_id" not in local or "tenant_id" not in remote:
                    gaps.add((table, "fk " + ",".join(local)))
    return gaps


# `reconciliation_<table> <alias>` in FROM / JOIN / UPDATE; an INSERT's column list is no alias.
TABLE_ALIAS = re.compile(r"\breconciliation_(\w+)\s+(?:AS\s+)?(?!WHERE\b|SET\b|ON\b|USING\b|JOIN\b)([a-z]\w*)\b")


def _named_units(sources: list[str]):
    """(name, node) of every function and every module-level constant of the sources (a
    statement can be kept in a constant, for a test to EXPLAIN it)."""
    for source in sources:
        module = ast.parse(source)
        for node in module.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                yield node.targets[0].id, node
        for node in ast.walk(module):
            if isinstance(node, ast.FunctionDef):
                yield node.name, node


def _sql_texts(function: ast.AST):
    """The SQL statements written in a function or constant: string literals and f-strings (their {…} parts
    read as `{}`) that contain a SELECT or an UPDATE."""
    for node in ast.walk(function):
        if isinstance(node, ast.JoinedStr):
            text = "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if re.search(r"\b(SELECT|UPDATE)\b", text):
            yield text


def _matcher_joins(distributed: set[str]) -> set[tuple[str, str]]:
    """Statements of the matcher (reconciliation/engine/passes.py and reasons.py) that read two or
    more distributed tables, where some alias of a distributed table is never constrained by `<alias>.tenant_id`.

    A static check on the SQL text (the statements are fixed strings; their interpolated parts
    are temp-table names and expressions): a join whose condition names tenant_id on both sides,
    or whose sides are each pinned to one tenant (`u.tenant_id = %(tenant)s`), is routed by Citus
    to one shard group. Joins with temp tables (the working set) are not between distributed
    tables and are not checked.
    """
    sources = [
        Path(module.__file__).read_text() for module in (reconciliation.engine.passes, reconciliation.engine.reasons)
    ]
    gaps = set()
    for name, node in _named_units(sources):
        for text in _sql_texts(node):
            aliases = {alias for table, alias in TABLE_ALIAS.findall(text) if f"reconciliation_{table}" in distributed}
            if len(aliases) < 2:
                continue
            unpinned = sorted(alias for alias in aliases if f"{alias}.tenant_id" not in text)
            if unpinned:
                gaps.add((f"matching.{name}", "join " + ",".join(unpinned)))
    return gaps


def test_reference_tables_exist_and_every_other_table_is_distributed_by_tenant():
    tables = _tables()
    assert set(REFERENCE_TABLES) <= set(tables)
    distributed = set(tables) - set(REFERENCE_TABLES)
    assert "reconciliation_record" in distributed and "reconciliation_match" in distributed


def test_the_schema_and_the_matcher_meet_citus_rules_but_for_the_listed_gaps():
    distributed = set(_tables()) - set(REFERENCE_TABLES)
    found = _catalog_gaps(distributed) | _matcher_joins(distributed)
    new = sorted(found - set(KNOWN_GAPS))
    fixed = sorted(set(KNOWN_GAPS) - found)
    assert not new, f"new Citus gaps (fix them, or list them with a reason): {new}"
    assert not fixed, f"fixed, remove them from KNOWN_GAPS (and the doc): {fixed}"


def test_every_distributed_table_but_the_listed_ones_has_tenant_id():
    distributed = set(_tables()) - set(REFERENCE_TABLES)
    without = {table for table, kind in _catalog_gaps(distributed) if kind == "column"}
    assert without == {"reconciliation_matchedrecord"}


def test_the_static_join_check_catches_a_join_without_tenant_id():
    # The checker itself: a join that pins one side only is reported, one that pins both is not.
    tree = ast.parse(
        'def f():\n    a = """SELECT 1 FROM reconciliation_record r JOIN reconciliation_match m ON m.job_id = r.job_id '
        'WHERE r.tenant_id = %s"""\n'
        '    b = """SELECT 1 FROM reconciliation_record r JOIN reconciliation_match m '
        'ON m.tenant_id = r.tenant_id AND m.job_id = r.job_id"""\n'
    )
    (function,) = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    texts = list(_sql_texts(function))
    distributed = {"reconciliation_record", "reconciliation_match"}
    unpinned = [
        sorted(alias for _, alias in TABLE_ALIAS.findall(text) if f"{alias}.tenant_id" not in text) for text in texts
    ]
    assert unpinned == [["m"], []]
    assert {f"reconciliation_{t}" for text in texts for t, _ in TABLE_ALIAS.findall(text)} == distributed
