"""The matcher: set-based SQL passes over a job's open records, inside PostgreSQL.

Per execution the open records of each side are copied once into two working tables (ids and
the normalized fields the passes compare): UNLOGGED tables named by the execution
(`recon_work_<id>_l`, `_r`), not session temp tables, so that any connection can read them. The
passes run one transaction each, and behind PgBouncer in transaction mode consecutive
transactions may run on different server sessions; a pass's own scratch tables (`candidate_pairs`,
`chosen`) are temp tables dropped at its commit. Unlogged: they are a cache of the records
table (PostgreSQL empties them after a crash; a resume rebuilds them anyway). Each pass then

1. writes its candidate pairs (or groups) with a confidence into the temp table `candidate_pairs`,
2. assigns one-to-one greedily by confidence (`_assign_greedy`): repeatedly keep every pair that
   is the best remaining choice of both its records, under one strict order (confidence desc,
   day distance, left id, right id). With a strict order this gives exactly the matching of the
   textbook greedy algorithm ("take the best remaining pair"), in a few set-based rounds instead
   of one query per record,
3. and commits, in one transaction, its matches, their MatchedRecord rows and the execution's
   progress (`passes_done`). A retry after a crash skips the passes already committed, and a pass
   re-run finds nothing left to match, so a killed run finishes with the same result.

Ambiguity is never resolved silently: a pair whose record had another candidate as good (within
AMBIGUITY_MARGIN) is at most `suggested`, whatever its confidence.
"""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection

from reconciliation.engine.rules import MatchingRules
from reconciliation.errors import ReconciliationError
from reconciliation.models import Execution, Match
from reconciliation.workflow.signoff import working_set_exclude_frozen

# Groups before tolerance: an exact sum of records sharing a reference is stronger evidence than
# one drifted pair, and a tolerance pair must not take a part of a split payment.
PASSES = ("exact", "group_one_to_many", "group_many_to_one", "tolerance")
# Two candidates closer than this in confidence are "as good" as each other: a person decides.
AMBIGUITY_MARGIN = 0.02
GROUP_CONFIDENCE = {"reference": 1.0, "counterparty": 0.85}
MAX_GREEDY_ROUNDS = 50
# Trigram similarity of unrelated texts of one format ("INV-2026-…", "… Holdings Ltd") reaches
# about this much; only what lies above it counts as evidence (measured on bench/recon_data.py
# sets: 90% of wrong pairs score below 0.27 on references and 0.12 on counterparties).
SIMILARITY_FLOOR = 0.3
# Amount and date alone (no reference or counterparty on one side; only with require_evidence
# off) suggest at most, never above this nor at auto_threshold.
NO_TEXT_EVIDENCE_CAP = 0.75


class ConcurrentChange(ReconciliationError):
    """Records this pass chose were matched by someone else meanwhile; the pass is re-run."""


@dataclass
class PassResult:
    name: str
    auto: int = 0
    suggested: int = 0
    records: int = 0
    candidates: int = 0
    duration_ms: int = 0

    def as_dict(self) -> dict:
        return {
            "auto": self.auto,
            "suggested": self.suggested,
            "matches": self.auto + self.suggested,
            "records": self.records,
            "candidates": self.candidates,
            "duration_ms": self.duration_ms,
        }


def work_tables(execution_id: int) -> tuple[str, str]:
    """The execution's working tables, left and right (their names are ours: an int, no quoting)."""
    return f"recon_work_{int(execution_id)}_l", f"recon_work_{int(execution_id)}_r"


@dataclass
class MatchingContext:
    execution: Execution
    rules: MatchingRules
    has_trigram: bool
    results: dict = field(default_factory=dict)

    @property
    def wl(self) -> str:
        return work_tables(self.execution.pk)[0]

    @property
    def wr(self) -> str:
        return work_tables(self.execution.pk)[1]


# --- Working set ---------------------------------------------------------------------------------


def has_trigram_extension() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm')")
        return cursor.fetchone()[0]


def load_working_set(ctx: "MatchingContext") -> None:
    """(Re)build the execution's working tables from the job's open records (after a crash, a
    retry, or a concurrent change, the database is the truth)."""
    job_id = ctx.execution.job_id
    drop_working_set(ctx.execution.pk)
    with connection.cursor() as cursor:
        for table, side in ((ctx.wl, "left"), (ctx.wr, "right")):
            cursor.execute(
                f"""
                CREATE UNLOGGED TABLE {table} AS
                SELECT id, currency, amount, booked_on, reference_norm AS ref,
                       lower(btrim(counterparty)) AS cp
                FROM reconciliation_record r
                WHERE job_id = %s AND side = %s
                  AND NOT EXISTS (SELECT 1 FROM reconciliation_matchedrecord m WHERE m.record_id = r.id)
                """,
                [job_id, side],
            )
            cursor.execute(f"CREATE UNIQUE INDEX ON {table} (id)")
            cursor.execute(f"ANALYZE {table}")
    # Signed-off periods are read-only (workflow/signoff.py): their records leave the working set.
    working_set_exclude_frozen(job_id=job_id, tables=(ctx.wl, ctx.wr))


def window_point(alias: str) -> str:
    """A record as a point: x = its day, in a band of its currency; y = its amount."""
    return (
        f"point(({alias}.booked_on - DATE '2000-01-01') + 1000000 * abs(mod(hashtext({alias}.currency), 1000)),"
        f" {alias}.amount::float8)"
    )


def window_box(alias: str, tolerance: str, window_days: int) -> str:
    """The box of points within the date window and amount drift of record `alias` (a little wider
    than exact: float8 is only the index's prefilter; the numeric conditions decide)."""
    x = f"(({alias}.booked_on - DATE '2000-01-01') + 1000000 * abs(mod(hashtext({alias}.currency), 1000)))"
    return (
        f"box(point({x} - {window_days}, {alias}.amount::float8 - ({tolerance})::float8 - 0.01),"
        f" point({x} + {window_days}, {alias}.amount::float8 + ({tolerance})::float8 + 0.01))"
    )


def index_working_set_windows(ctx: "MatchingContext") -> None:
    """A GiST index of (day, amount) points per side, for the passes that look for records within
    a drift and a window: one R-tree probe instead of walking every amount neighbour (at 1M
    records a btree on (currency, amount) walked ~300 entries per probe: 85 s for the tolerance
    pass). Built when first needed, on what the exact and group passes left (~30%)."""
    with connection.cursor() as cursor:
        for table in (ctx.wl, ctx.wr):
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_window ON {table} USING gist ({window_point(table)})")


def drop_working_set(execution_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {', '.join(work_tables(execution_id))}")


# --- Candidates per pass -------------------------------------------------------------------------


def _similarity(a: str, b: str, has_trigram: bool) -> str:
    """SQL for a 0..1 similarity of two texts: pg_trgm when installed, else word overlap."""
    if has_trigram:
        return f"similarity({a}, {b})"
    # Jaccard overlap of the words of both texts.
    return f"""(SELECT CASE WHEN count(*) = 0 THEN 0 ELSE
                    count(*) FILTER (WHERE in_a AND in_b)::float / count(*) END
                FROM (SELECT word, bool_or(src = 'a') AS in_a, bool_or(src = 'b') AS in_b
                      FROM (SELECT unnest(regexp_split_to_array({a}, '[^a-z0-9]+')) AS word, 'a' AS src
                            UNION ALL
                            SELECT unnest(regexp_split_to_array({b}, '[^a-z0-9]+')), 'b') words
                      WHERE word <> '' GROUP BY word) overlap)"""


def _evidence(a: str, b: str, has_trigram: bool) -> str:
    """0..1 evidence that two texts name the same thing: 1 when equal, else their similarity
    above SIMILARITY_FLOOR rescaled to 0..1 (unrelated texts of one format share some trigrams)."""
    return f"""CASE WHEN {a} = {b} THEN 1
                    ELSE greatest(0, ({_similarity(a, b, has_trigram)} - {SIMILARITY_FLOOR}) / (1 - {SIMILARITY_FLOOR}))
               END"""


def tolerance_sql(rules: MatchingRules, amount: str) -> str:
    """ToleranceRules.drift in SQL: the allowed drift around `amount`, the larger of the absolute
    and the percentage."""
    drift = rules.tolerance
    return f"greatest({drift.amount_abs}::numeric, abs({amount}) * {drift.amount_pct}::numeric / 100)"


def _candidates_exact(ctx: MatchingContext) -> str:
    return f"""
        CREATE TEMP TABLE candidate_pairs ON COMMIT DROP AS
        SELECT l.id AS left_id, r.id AS right_id, 1.0::float8 AS confidence,
               abs(l.booked_on - r.booked_on) AS days, l.amount AS left_amount, r.amount AS right_amount
        FROM {ctx.wl} l
        JOIN {ctx.wr} r ON r.currency = l.currency AND r.amount = l.amount AND r.ref = l.ref
        WHERE l.ref <> '' AND abs(l.booked_on - r.booked_on) <= {int(ctx.rules.date_window_days)}
    """


def _candidates_tolerance(ctx: MatchingContext) -> str:
    """Pairs within the amount drift and the date window, scored 0..1.

    Amount and date score 0.5..1 inside the tolerance (anything inside is plausible); reference
    and counterparty similarity tell plausible pairs apart. A text missing on either side is
    absent evidence, not a mismatch: its weight leaves the average. A pair needs evidence beyond
    amount and date (a reference or counterparty similar above SIMILARITY_FLOOR): under the
    default drift (max(1.00, 0.5%)) a 40,000 amount has ±200 of room, and amount and date alone
    paired unrelated records (every such suggestion was wrong on bench/recon_data.py sets).
    With `require_evidence` off, a pair without any is kept, capped at NO_TEXT_EVIDENCE_CAP.
    """
    weights = ctx.rules.tolerance.weights
    window = int(ctx.rules.date_window_days)
    tolerance = tolerance_sql(ctx.rules, "l.amount")
    evidence_filter = ""
    if ctx.rules.tolerance.require_evidence:
        evidence_filter = "AND (reference_score > 0 OR counterparty_score > 0)"
    return f"""
        CREATE TEMP TABLE candidate_pairs ON COMMIT DROP AS
        SELECT left_id, right_id, days, left_amount, right_amount,
               round(CASE WHEN text_weight = 0 THEN least(score, {no_text_cap(ctx.rules)}) ELSE score END::numeric, 4)
                   ::float8 AS confidence
        FROM (
            SELECT left_id, right_id, days, left_amount, right_amount, text_weight, reference_score, counterparty_score,
                   ({weights["amount"]} * amount_score + {weights["date"]} * date_score
                    + {weights["reference"]} * reference_score + {weights["counterparty"]} * counterparty_score)
                   / nullif({weights["amount"]} + {weights["date"]} + text_weight, 0) AS score
            FROM (
                SELECT l.id AS left_id, r.id AS right_id, abs(l.booked_on - r.booked_on) AS days,
                       l.amount AS left_amount, r.amount AS right_amount,
                       CASE WHEN {tolerance} = 0 THEN 1
                            ELSE 1 - abs(l.amount - r.amount) / (2 * {tolerance}) END AS amount_score,
                       1 - abs(l.booked_on - r.booked_on)::numeric / (2 * ({window} + 1)) AS date_score,
                       CASE WHEN l.ref = '' OR r.ref = '' THEN 0
                            ELSE {_evidence("l.ref", "r.ref", ctx.has_trigram)} END AS reference_score,
                       CASE WHEN l.cp = '' OR r.cp = '' THEN 0
                            ELSE {_evidence("l.cp", "r.cp", ctx.has_trigram)} END AS counterparty_score,
                       CASE WHEN l.ref = '' OR r.ref = '' THEN 0 ELSE {weights["reference"]} END
                       + CASE WHEN l.cp = '' OR r.cp = '' THEN 0 ELSE {weights["counterparty"]} END AS text_weight
                FROM {ctx.wl} l
                CROSS JOIN LATERAL (
                    SELECT * FROM {ctx.wr} r
                    WHERE {window_point("r")} <@ {window_box("l", tolerance, window)}
                      AND r.currency = l.currency
                      AND r.amount BETWEEN l.amount - {tolerance} AND l.amount + {tolerance}
                      AND r.booked_on BETWEEN l.booked_on - {window} AND l.booked_on + {window}
                ) r
            ) parts
        ) scored
        WHERE score IS NOT NULL {evidence_filter}
    """


def no_text_cap(rules: MatchingRules) -> float:
    """The most a pair without any text may score: below auto_threshold, whatever the rules say."""
    return min(NO_TEXT_EVIDENCE_CAP, round(rules.auto_threshold - 0.0001, 4))


def _candidates_group(ctx: MatchingContext, *, one_side: str) -> str:
    """One record of `one_side` against all open records of the other side that share its key
    (reference or counterparty) within the date window, when there are 2..max of them and they
    sum exactly to its amount. A record of the many side wanted by two groups is ambiguous: it
    joins neither."""
    rules = ctx.rules.group
    key = "ref" if rules.key == "reference" else "cp"
    one, many = (ctx.wl, ctx.wr) if one_side == "left" else (ctx.wr, ctx.wl)
    window = int(ctx.rules.date_window_days)
    confidence = GROUP_CONFIDENCE[rules.key]
    left_ids, right_ids = ("ARRAY[o.id]", "g.member_ids") if one_side == "left" else ("g.member_ids", "ARRAY[o.id]")
    left_amount, right_amount = ("o.amount", "g.total") if one_side == "left" else ("g.total", "o.amount")
    return f"""
        CREATE TEMP TABLE chosen ON COMMIT DROP AS
        WITH groups AS (
            SELECT o.id AS one_id, array_agg(m.id ORDER BY m.id) AS member_ids,
                   sum(m.amount) AS total, count(*) AS size
            FROM {one} o
            JOIN {many} m ON m.currency = o.currency AND m.{key} = o.{key}
                         AND m.booked_on BETWEEN o.booked_on - {window} AND o.booked_on + {window}
            -- Both sides, so the planner's estimate leaves out the many empty keys.
            WHERE o.{key} <> '' AND m.{key} <> ''
            GROUP BY o.id
        ),
        fitting AS (
            SELECT g.* FROM groups g JOIN {one} o ON o.id = g.one_id
            WHERE g.size BETWEEN 2 AND {int(rules.max_group_size)} AND g.total = o.amount
        ),
        membership AS (
            SELECT one_id, unnest(member_ids) AS member_id FROM fitting
        ),
        -- Groups with a member another group wants too: one hash join, not a scan per group.
        contested_groups AS (
            SELECT DISTINCT m.one_id
            FROM membership m
            JOIN (SELECT member_id FROM membership GROUP BY member_id HAVING count(*) > 1) c USING (member_id)
        )
        SELECT {left_ids} AS left_ids, {right_ids} AS right_ids, {left_amount} AS left_amount,
               {right_amount} AS right_amount, {confidence}::float8 AS confidence, false AS ambiguous
        FROM fitting g JOIN {one} o ON o.id = g.one_id
        WHERE g.one_id NOT IN (SELECT one_id FROM contested_groups)
    """


# --- Greedy one-to-one assignment ----------------------------------------------------------------


def _assign_greedy(cursor) -> None:
    """From `candidate_pairs` (left_id, right_id, confidence, days) build `chosen`, one-to-one."""
    cursor.execute(
        """
        CREATE TEMP TABLE chosen (
            left_ids bigint[], right_ids bigint[], left_amount numeric, right_amount numeric,
            confidence float8, ambiguous boolean, round int
        ) ON COMMIT DROP
        """
    )
    # Round 0, the pairs that are each of their records' only candidate: the greedy's first round
    # takes them all, and neither record has a rival. They are most pairs of the exact pass (all
    # but ~2,000 of 700,000 at 1M x 1M): taken here in two window sorts, they leave the rivals'
    # and the rounds' sorts to the contested rest (greedy 3.1 -> 1.4 s; hash aggregates of the
    # degrees were slower than sorts, 2.1 s).
    cursor.execute(
        """
        CREATE TEMP TABLE candidate_degrees ON COMMIT DROP AS
        SELECT left_id, right_id, confidence, days, left_amount, right_amount,
               count(*) OVER (PARTITION BY left_id) = 1 AND right_degree = 1 AS lonely
        FROM (SELECT c.*, count(*) OVER (PARTITION BY right_id) AS right_degree FROM candidate_pairs c) c
        """
    )
    cursor.execute(
        """
        INSERT INTO chosen (left_ids, right_ids, left_amount, right_amount, confidence, ambiguous, round)
        SELECT ARRAY[left_id], ARRAY[right_id], left_amount, right_amount, confidence, false, 0
        FROM candidate_degrees WHERE lonely
        """
    )
    cursor.execute("DROP TABLE candidate_pairs")
    cursor.execute(
        """
        CREATE TEMP TABLE candidate_pairs ON COMMIT DROP AS
        SELECT left_id, right_id, confidence, days, left_amount, right_amount FROM candidate_degrees WHERE NOT lonely
        """
    )
    cursor.execute("DROP TABLE candidate_degrees")
    # Records with a rival: two or more candidates within AMBIGUITY_MARGIN of their best.
    cursor.execute(
        f"""
        CREATE TEMP TABLE rivals ON COMMIT DROP AS
        SELECT 'l' AS side, left_id AS record_id FROM (
            SELECT left_id, confidence, max(confidence) OVER (PARTITION BY left_id) AS best FROM candidate_pairs
        ) c WHERE confidence >= best - {AMBIGUITY_MARGIN} GROUP BY left_id HAVING count(*) > 1
        UNION ALL
        SELECT 'r', right_id FROM (
            SELECT right_id, confidence, max(confidence) OVER (PARTITION BY right_id) AS best FROM candidate_pairs
        ) c WHERE confidence >= best - {AMBIGUITY_MARGIN} GROUP BY right_id HAVING count(*) > 1
        """
    )
    for round_number in range(1, MAX_GREEDY_ROUNDS + 1):
        cursor.execute(
            """
            INSERT INTO chosen (left_ids, right_ids, left_amount, right_amount, confidence, ambiguous, round)
            SELECT ARRAY[b.left_id], ARRAY[b.right_id], b.left_amount, b.right_amount, b.confidence, false, %s
            FROM (SELECT DISTINCT ON (left_id) left_id, right_id, left_amount, right_amount, confidence
                  FROM candidate_pairs ORDER BY left_id, confidence DESC, days, right_id) b
            JOIN (SELECT DISTINCT ON (right_id) right_id, left_id
                  FROM candidate_pairs ORDER BY right_id, confidence DESC, days, left_id) r
              USING (left_id, right_id)
            """,
            [round_number],
        )
        if cursor.rowcount == 0:
            break
        _drop_taken_candidates(cursor, round_number)
    else:
        raise ReconciliationError(f"greedy assignment did not settle in {MAX_GREEDY_ROUNDS} rounds")
    cursor.execute(
        """
        UPDATE chosen SET ambiguous = true
        WHERE EXISTS (SELECT 1 FROM rivals WHERE side = 'l' AND record_id = left_ids[1])
           OR EXISTS (SELECT 1 FROM rivals WHERE side = 'r' AND record_id = right_ids[1])
        """
    )
    cursor.execute("DROP TABLE rivals")


def _drop_taken_candidates(cursor, round_number: int) -> None:
    """Both records of every pair taken in this round leave the candidate graph: the rest is
    copied (deleting most of a big table costs more than copying what is left)."""
    cursor.execute(
        """
        CREATE TEMP TABLE candidate_rest ON COMMIT DROP AS
        SELECT c.* FROM candidate_pairs c
        WHERE NOT EXISTS (SELECT 1 FROM chosen t WHERE t.round = %(round)s AND t.left_ids[1] = c.left_id)
          AND NOT EXISTS (SELECT 1 FROM chosen t WHERE t.round = %(round)s AND t.right_ids[1] = c.right_id)
        """,
        {"round": round_number},
    )
    cursor.execute("DROP TABLE candidate_pairs")
    cursor.execute("ALTER TABLE candidate_rest RENAME TO candidate_pairs")


# --- Running a pass ------------------------------------------------------------------------------


def set_match_work_mem(cursor) -> None:
    """RECONCILIATION_MATCH_WORK_MEM for the rest of this transaction only (SET LOCAL)."""
    cursor.execute("SELECT set_config('work_mem', %s, true)", [settings.RECONCILIATION_MATCH_WORK_MEM])


def pass_enabled(rules: MatchingRules, name: str) -> bool:
    return {
        "exact": rules.exact_enabled,
        "tolerance": rules.tolerance.enabled,
        "group_one_to_many": rules.group.enabled,
        "group_many_to_one": rules.group.enabled,
    }[name]


def run_pass(ctx: MatchingContext, name: str) -> PassResult:
    """Find, assign and commit one pass's matches (the caller holds the transaction)."""
    started = time.perf_counter()
    rules = ctx.rules
    result = PassResult(name=name)
    pass_name = {"exact": Match.Pass.EXACT, "tolerance": Match.Pass.TOLERANCE}.get(name, Match.Pass.GROUP)
    with connection.cursor() as cursor:
        set_match_work_mem(cursor)
        cursor.execute("DROP TABLE IF EXISTS candidate_pairs, candidate_rest, chosen")
        if name in ("exact", "tolerance"):
            if name == "tolerance":
                index_working_set_windows(ctx)
            cursor.execute(_candidates_exact(ctx) if name == "exact" else _candidates_tolerance(ctx))
            result.candidates = cursor.rowcount
            # Below review_threshold a pair is never proposed, so it takes no part in the choice.
            cursor.execute("DELETE FROM candidate_pairs WHERE confidence < %s", [rules.review_threshold])
            cursor.execute("ANALYZE candidate_pairs")
            _assign_greedy(cursor)
        else:
            cursor.execute(_candidates_group(ctx, one_side="left" if name == "group_one_to_many" else "right"))
            result.candidates = cursor.rowcount
        result.auto, result.suggested, result.records = _commit_matches(cursor, ctx, name, pass_name)
        for table, column in ((ctx.wl, "left_ids"), (ctx.wr, "right_ids")):
            _remove_taken(cursor, table, column, rules.review_threshold)
        cursor.execute("DROP TABLE candidate_pairs, chosen" if name in ("exact", "tolerance") else "DROP TABLE chosen")
    result.duration_ms = int((time.perf_counter() - started) * 1000)
    return result


def _commit_matches(cursor, ctx: MatchingContext, name: str, pass_name: str) -> tuple[int, int, int]:
    """Insert the matches of `chosen` and their MatchedRecord rows: (auto, suggested, records).

    Matches are numbered in (left_ids, right_ids) order; a record is in one match of a pass at
    most, so left_ids[1] alone orders them the same, and the sort compares integers instead of
    arrays. MatchedRecord rows go in record_id order (appends to its primary key, not a random
    walk: 1.4M rows at 1M x 1M). Its primary key keeps a record matched once: a record a person
    matched meanwhile fails the INSERT, and the pass is undone and redone (ConcurrentChange)."""
    rules = ctx.rules
    # The sort of ~700,000 chosen rows (the exact pass at 1M) fits in memory (~100 MB) rather
    # than spilling to disk: this statement only, back to the pass's work_mem after it.
    cursor.execute("SELECT set_config('work_mem', %s, true)", [settings.RECONCILIATION_MATCH_SORT_WORK_MEM])
    try:
        cursor.execute(
            """
            WITH inserted AS (
                INSERT INTO reconciliation_match
                    (matched_at, tenant_id, job_id, execution_id, pass_name, status, confidence,
                     left_ids, right_ids, left_amount, right_amount, note)
                SELECT now(), %(tenant)s, %(job)s, %(execution)s, %(pass)s,
                       CASE WHEN c.confidence >= %(auto)s AND NOT c.ambiguous THEN 'auto' ELSE 'suggested' END,
                       c.confidence, c.left_ids, c.right_ids, c.left_amount, c.right_amount, ''
                FROM chosen c
                WHERE c.confidence >= %(review)s
                ORDER BY c.left_ids[1], c.right_ids[1]
                RETURNING id, status, left_ids, right_ids
            ),
            marked AS (
                INSERT INTO reconciliation_matchedrecord (record_id, match_id)
                SELECT record_id, id FROM (SELECT unnest(left_ids || right_ids) AS record_id, id FROM inserted) m
                ORDER BY record_id
            )
            SELECT count(*) FILTER (WHERE status = 'auto'), count(*) FILTER (WHERE status = 'suggested'),
                   coalesce(sum(cardinality(left_ids) + cardinality(right_ids)), 0)
            FROM inserted
            """,
            {
                "auto": rules.auto_threshold,
                "review": rules.review_threshold,
                "tenant": ctx.execution.tenant_id,
                "job": ctx.execution.job_id,
                "execution": ctx.execution.pk,
                "pass": pass_name,
            },
        )
    except IntegrityError as error:
        # Someone matched one of these records by hand meanwhile: undo this pass, start over.
        raise ConcurrentChange(f"pass {name}: a record was taken meanwhile ({error})") from None
    counts = cursor.fetchone()
    cursor.execute("SELECT set_config('work_mem', %s, true)", [settings.RECONCILIATION_MATCH_WORK_MEM])
    return counts


def _remove_taken(cursor, table: str, column: str, review_threshold: float) -> None:
    """Take the records of this pass's matches out of the working set: deleted when few, the
    table rebuilt from the rest when most went (the exact pass takes ~70%: deleting 700,000 rows
    of a temp table cost 3.3 s, copying the other 300,000 under a second)."""
    taken = f"SELECT unnest({column}) AS id FROM chosen WHERE confidence >= {float(review_threshold)}"
    # The table's size as its last ANALYZE counted it (it is analyzed after every change): counting
    # a million rows and unnesting the taken ids to count them cost 0.2 s a side at 1M.
    cursor.execute(
        f"""SELECT (SELECT coalesce(sum(cardinality({column})), 0) FROM chosen
                    WHERE confidence >= {float(review_threshold)}),
                   (SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass)"""
    )
    taken_count, total = cursor.fetchone()
    if not taken_count:
        return
    if taken_count * 2 < total:
        cursor.execute(f"DELETE FROM {table} USING ({taken}) taken WHERE {table}.id = taken.id")
    else:
        cursor.execute(
            f"""CREATE UNLOGGED TABLE {table}_rest AS
                SELECT * FROM {table} WHERE NOT EXISTS (SELECT 1 FROM ({taken}) t WHERE t.id = {table}.id)"""
        )
        cursor.execute(f"DROP TABLE {table}")
        cursor.execute(f"ALTER TABLE {table}_rest RENAME TO {table}")
        cursor.execute(f"CREATE UNIQUE INDEX ON {table} (id)")
    # What is left is what the next pass plans on.
    cursor.execute(f"ANALYZE {table}")


# --- After the passes ----------------------------------------------------------------------------


def job_totals(job_id: int, tenant_id: int) -> dict:
    """Records and amounts per side and status, and open exceptions by reason, for the summary."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT r.side, count(*), count(m.record_id),
                   coalesce(sum(r.amount) FILTER (WHERE m.record_id IS NOT NULL), 0),
                   coalesce(sum(r.amount) FILTER (WHERE m.record_id IS NULL), 0)
            FROM reconciliation_record r
            LEFT JOIN reconciliation_matchedrecord m ON m.record_id = r.id
            WHERE r.job_id = %s GROUP BY r.side
            """,
            [job_id],
        )
        sides = {
            side: {
                "records": total,
                "matched": matched,
                "amount_matched": str(amount_matched),
                "amount_open": str(amount_open),
            }
            for side, total, matched, amount_matched, amount_open in cursor.fetchall()
        }
        cursor.execute(
            """
            SELECT reason, count(*) FROM reconciliation_unmatched
            WHERE tenant_id = %s AND job_id = %s AND resolved_at IS NULL GROUP BY reason ORDER BY reason
            """,
            [tenant_id, job_id],
        )
        open_by_reason = dict(cursor.fetchall())
    empty = {"records": 0, "matched": 0, "amount_matched": "0", "amount_open": "0"}
    left, right = sides.get("left", empty), sides.get("right", empty)
    records = left["records"] + right["records"]
    matched = left["matched"] + right["matched"]
    return {
        "left": left,
        "right": right,
        "records": records,
        "matched_records": matched,
        "open_records": records - matched,
        "match_rate": round(matched / records, 4) if records else 0.0,
        "open_by_reason": open_by_reason,
    }
