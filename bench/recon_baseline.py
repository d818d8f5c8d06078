"""The reconciliation baseline: a reasonable pure-Python matcher, timed on a sample and extrapolated.

    python bench/recon_baseline.py --data var/bench/recon-100k --sample 10000

What it does (the same passes as the engine, written the way a careful Python developer would):

1. Load both CSVs completely with the csv module into tuples, and build dict indexes: right and
   left records by normalized reference; right records by (currency, amount bucket, week) where
   the bucket is whole units for |amount| <= 200 (drift up to 1.00) and a 0.5%-wide logarithmic
   bucket above, so a tolerance lookup touches 3 buckets x 2 weeks instead of scanning.
   This is timed in full (load_seconds), not extrapolated.
2. For each of the first `sample_left` left records, in file order, greedily (a record is used
   at most once):
   - exact: an open right record with the same normalized reference, currency and amount within
     the date window; two equally good ones -> left open (ambiguous);
   - one-to-many: 2..max_parts open right records with the reference whose amounts sum exactly;
   - many-to-one: the open left records with the reference whose sum equals one right record;
   - tolerance: candidates from the reference and amount-bucket indexes within drift
     (max(1.00, 0.5%)) and the window, scored on reference trigram similarity, counterparty
     token overlap, amount and date closeness; the best one if it scores >= MIN_SCORE and beats
     the runner-up by MARGIN.
   This loop is timed (seconds_measured) and extrapolated linearly to every left record: the
   indexes already hold the whole right side, so the per-record cost is the full-size cost.

It is a baseline to compare against, not a strawman: every lookup is a dict hit, nothing scans
the other side.
"""

import argparse
import csv
import itertools
import math
import resource
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.recon_data import CSV_COLUMNS, UNITS, normalize_reference, parse_amount_units, score

DATE_WINDOW_DAYS = 3
DRIFT_ABS_UNITS = 1 * UNITS
DRIFT_PCT = 0.005
MAX_PARTS = 4
MIN_SCORE = 0.45
MARGIN = 0.05
_LOG_STEP = math.log1p(DRIFT_PCT)
_ABS_LIMIT_UNITS = int(DRIFT_ABS_UNITS / DRIFT_PCT)  # below 200.00 the absolute drift is the wider one

# record tuple fields
ID, AMOUNT, CURRENCY, DAY, REF, COUNTERPARTY = range(6)


@dataclass
class BaselineResult:
    seconds_measured: float  # the matching loop over the sample
    sample_size: int
    extrapolated_seconds_full: float  # load_seconds + the loop scaled to n_left
    pairs: list[tuple[frozenset[str], frozenset[str]]]
    load_seconds: float = 0.0
    n_left: int = 0
    n_right: int = 0
    sample_left_ids: list[str] | None = None
    peak_rss_mb: float = 0.0
    # CPU time of this process for the same two phases: on a shared machine the wall-clock
    # figures above include waiting for a core, these do not.
    load_cpu_seconds: float = 0.0
    cpu_seconds_measured: float = 0.0

    @property
    def extrapolated_cpu_seconds_full(self) -> float:
        scale = self.n_left / self.sample_size if self.sample_size else 0.0
        return self.load_cpu_seconds + self.cpu_seconds_measured * scale


def _tokens(text: str) -> frozenset[str]:
    return frozenset("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def _trigrams(reference: str) -> frozenset[str]:
    return frozenset(reference[i : i + 3] for i in range(len(reference) - 2))


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def _load(path: Path, day_cache: dict[str, int]) -> list[tuple]:
    records = []
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        if tuple(next(reader)) != CSV_COLUMNS:
            raise ValueError(f"{path}: header must be {','.join(CSV_COLUMNS)}")
        for external_id, amount, currency, booked_on, reference, counterparty, _description in reader:
            day = day_cache.get(booked_on)
            if day is None:
                day = day_cache[booked_on] = date.fromisoformat(booked_on).toordinal()
            ref = normalize_reference(reference)
            records.append((external_id, parse_amount_units(amount), currency, day, ref, counterparty))
    return records


def _amount_buckets(units: int) -> tuple[str, int, int]:
    """(kind, bucket, width in buckets to look either side) for the drift allowed at this amount."""
    magnitude = abs(units)
    if magnitude <= _ABS_LIMIT_UNITS:
        return "a", units // UNITS, 1
    return ("p" if units > 0 else "n"), int(math.log(magnitude) / _LOG_STEP), 1


def baseline_match(left_csv: Path, right_csv: Path, *, sample_left: int = 10_000) -> BaselineResult:
    started, started_cpu = time.perf_counter(), time.process_time()
    day_cache: dict[str, int] = {}
    left = _load(left_csv, day_cache)
    right = _load(right_csv, day_cache)
    left_by_ref: dict[str, list[int]] = {}
    for i, rec in enumerate(left):
        if rec[REF]:
            left_by_ref.setdefault(rec[REF], []).append(i)
    right_by_ref: dict[str, list[int]] = {}
    right_by_amount: dict[tuple, list[int]] = {}
    for j, rec in enumerate(right):
        if rec[REF]:
            right_by_ref.setdefault(rec[REF], []).append(j)
        kind, bucket, _ = _amount_buckets(rec[AMOUNT])
        # an amount just above the absolute limit is also looked up as absolute, so index it both ways
        right_by_amount.setdefault((rec[CURRENCY], kind, bucket, rec[DAY] // 7), []).append(j)
        if kind != "a" and abs(rec[AMOUNT]) <= _ABS_LIMIT_UNITS + DRIFT_ABS_UNITS:
            right_by_amount.setdefault((rec[CURRENCY], "a", rec[AMOUNT] // UNITS, rec[DAY] // 7), []).append(j)
        elif kind == "a" and abs(rec[AMOUNT]) >= _ABS_LIMIT_UNITS - DRIFT_ABS_UNITS:
            sign = "p" if rec[AMOUNT] > 0 else "n"
            bucket = int(math.log(abs(rec[AMOUNT])) / _LOG_STEP)
            right_by_amount.setdefault((rec[CURRENCY], sign, bucket, rec[DAY] // 7), []).append(j)
    load_seconds, load_cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu

    started, started_cpu = time.perf_counter(), time.process_time()
    sample = left[: max(0, sample_left)]
    left_used = [False] * len(left)
    right_used = [False] * len(right)
    pairs: list[tuple[frozenset[str], frozenset[str]]] = []

    def in_window(a: tuple, b: tuple) -> bool:
        return a[CURRENCY] == b[CURRENCY] and abs(a[DAY] - b[DAY]) <= DATE_WINDOW_DAYS

    for i, rec in enumerate(sample):
        if left_used[i]:
            continue
        same_ref = [j for j in right_by_ref.get(rec[REF], ()) if not right_used[j] and in_window(rec, right[j])]

        # exact
        exact = [j for j in same_ref if right[j][AMOUNT] == rec[AMOUNT]]
        if exact:
            exact.sort(key=lambda j: abs(right[j][DAY] - rec[DAY]))
            if len(exact) == 1 or abs(right[exact[0]][DAY] - rec[DAY]) < abs(right[exact[1]][DAY] - rec[DAY]):
                j = exact[0]
                left_used[i] = right_used[j] = True
                pairs.append((frozenset((rec[ID],)), frozenset((right[j][ID],))))
            continue  # equally good candidates: ambiguous, left open

        # one-to-many: parts with the same reference summing exactly to this record
        if 2 <= len(same_ref) <= 8:
            found = None
            for size in range(min(MAX_PARTS, len(same_ref)), 1, -1):
                for combo in itertools.combinations(same_ref, size):
                    if sum(right[j][AMOUNT] for j in combo) == rec[AMOUNT]:
                        found = combo
                        break
                if found:
                    break
            if found:
                left_used[i] = True
                for j in found:
                    right_used[j] = True
                pairs.append((frozenset((rec[ID],)), frozenset(right[j][ID] for j in found)))
                continue

        # many-to-one: this record and its open siblings (same reference) sum to one right record
        siblings = [k for k in left_by_ref.get(rec[REF], ()) if not left_used[k] and left[k][CURRENCY] == rec[CURRENCY]]
        if 2 <= len(siblings) <= MAX_PARTS:
            total = sum(left[k][AMOUNT] for k in siblings)
            hits = [
                j
                for j in same_ref
                if right[j][AMOUNT] == total
                and all(abs(left[k][DAY] - right[j][DAY]) <= DATE_WINDOW_DAYS for k in siblings)
            ]
            if len(hits) == 1:
                j = hits[0]
                right_used[j] = True
                for k in siblings:
                    left_used[k] = True
                pairs.append((frozenset(left[k][ID] for k in siblings), frozenset((right[j][ID],))))
                continue

        # tolerance: reference or amount-bucket candidates within drift and window, best score wins
        bound = max(DRIFT_ABS_UNITS, int(abs(rec[AMOUNT]) * DRIFT_PCT))
        kind, bucket, width = _amount_buckets(rec[AMOUNT])
        candidates = set(same_ref)
        for week in {(rec[DAY] - DATE_WINDOW_DAYS) // 7, (rec[DAY] + DATE_WINDOW_DAYS) // 7}:
            for b in range(bucket - width, bucket + width + 1):
                candidates.update(right_by_amount.get((rec[CURRENCY], kind, b, week), ()))
        scored = []
        ref_trigrams = cp_tokens = None  # computed once, only when there is a candidate to compare
        for j in candidates:
            other = right[j]
            delta = abs(other[AMOUNT] - rec[AMOUNT])
            if right_used[j] or delta > bound or not in_window(rec, other):
                continue
            if ref_trigrams is None:
                ref_trigrams, cp_tokens = _trigrams(rec[REF]), _tokens(rec[COUNTERPARTY])
            confidence = (
                0.35 * _jaccard(ref_trigrams, _trigrams(other[REF]))
                + 0.35 * _jaccard(cp_tokens, _tokens(other[COUNTERPARTY]))
                + 0.15 * (1 - delta / bound)
                + 0.15 * (1 - abs(other[DAY] - rec[DAY]) / (DATE_WINDOW_DAYS + 1))
            )
            scored.append((confidence, j))
        if scored:
            scored.sort(reverse=True)
            best, j = scored[0]
            if best >= MIN_SCORE and (len(scored) == 1 or best - scored[1][0] >= MARGIN):
                left_used[i] = right_used[j] = True
                pairs.append((frozenset((rec[ID],)), frozenset((right[j][ID],))))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu

    per_left = seconds / len(sample) if sample else 0.0
    return BaselineResult(
        seconds_measured=seconds,
        sample_size=len(sample),
        extrapolated_seconds_full=load_seconds + per_left * len(left),
        pairs=pairs,
        load_seconds=load_seconds,
        n_left=len(left),
        n_right=len(right),
        sample_left_ids=[rec[ID] for rec in sample],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        load_cpu_seconds=load_cpu_seconds,
        cpu_seconds_measured=cpu_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a directory written by bench/recon_data.py")
    parser.add_argument("--sample", type=int, default=10_000, help="left records matched (the rest extrapolated)")
    args = parser.parse_args(argv)
    result = baseline_match(args.data / "left.csv", args.data / "right.csv", sample_left=args.sample)
    measured = score(args.data / "truth.csv", result.pairs, within_left=result.sample_left_ids)
    print(
        f"{result.n_left:,} left x {result.n_right:,} right, Python baseline on the first {result.sample_size:,} left\n"
        f"  load CSVs + indexes     {result.load_seconds:8.2f} s   (CPU {result.load_cpu_seconds:.2f} s)\n"
        f"  match sample            {result.seconds_measured:8.2f} s   (CPU {result.cpu_seconds_measured:.2f} s, "
        f"{result.sample_size / result.seconds_measured if result.seconds_measured else 0:,.0f} left/s)\n"
        f"  extrapolated, all left  {result.extrapolated_seconds_full:8.2f} s   "
        f"(CPU {result.extrapolated_cpu_seconds_full:.2f} s)\n"
        f"  peak RSS                {result.peak_rss_mb:8.0f} MB\n"
        f"  on the sample: precision {measured.precision:.4f}, recall {measured.recall:.4f} "
        f"(tp {measured.tp:,}, fp {measured.fp:,}, fn {measured.fn:,}, ambiguous pairs {measured.neutral:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
