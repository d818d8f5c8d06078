"""The matcher's rules in plain Python: a reference implementation to test the SQL against.

reconciliation/engine/passes.py runs its passes as set-based SQL over working tables; this module
applies the same rules to a list of records, one loop at a time, the way the docstrings of
matching.py state them. It is quadratic and meant for small sets (tests/reconciliation/
test_matching_reference.py runs both on random sets with hypothesis and wants equal results).

Arithmetic follows PostgreSQL's types where a threshold could tell them apart: amounts and the
amount and date scores are numeric (Decimal), pg_trgm's similarity is float4, the score float8,
rounded through numeric to 4 places (float8 -> numeric keeps 15 significant digits).
"""

import re
import struct
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

# The same constants as reconciliation.engine.passes (imported there would pull in Django).
AMBIGUITY_MARGIN = 0.02
GROUP_CONFIDENCE = {"reference": 1.0, "counterparty": 0.85}
SIMILARITY_FLOOR = 0.3
NO_TEXT_EVIDENCE_CAP = 0.75
PASSES = ("exact", "group_one_to_many", "group_many_to_one", "tolerance")

_REF_PREFIX = re.compile(r"^\s*REF(ERENCE)?([^A-Z0-9]+|$)")
_NOT_ALNUM = re.compile(r"[^A-Z0-9]+")
_PADDING = re.compile(r"(^|[A-Z])0+(?=[0-9])")


@dataclass(frozen=True)
class Rec:
    id: int
    side: str
    currency: str
    amount: Decimal
    booked_on: date
    reference: str = ""
    counterparty: str = ""

    @property
    def ref(self) -> str:
        return normalized_reference(self.reference)

    @property
    def cp(self) -> str:
        return self.counterparty.strip(" ").lower()  # btrim: spaces only


@dataclass(frozen=True)
class Rules:
    date_window_days: int = 3
    auto_threshold: float = 0.6
    review_threshold: float = 0.4
    exact: bool = True
    tolerance: bool = True
    require_evidence: bool = True
    amount_abs: Decimal = Decimal("1.00")
    amount_pct: float = 0.5
    weights: tuple = (("amount", 0.25), ("date", 0.1), ("reference", 0.35), ("counterparty", 0.3))
    group: bool = True
    group_key: str = "reference"
    max_group_size: int = 5


@dataclass(frozen=True)
class Proposed:
    left_ids: tuple
    right_ids: tuple
    pass_name: str
    status: str
    confidence: float


def normalized_reference(reference: str) -> str:
    """reconciliation.models.normalized_reference."""
    without_prefix = _REF_PREFIX.sub("", reference.upper(), count=1)
    return _PADDING.sub(r"\1", _NOT_ALNUM.sub("", without_prefix))


def _float4(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _trigrams(text: str) -> set[str]:
    """pg_trgm: lower-cased words of letters and digits, padded "  word ", their 3-grams."""
    grams = set()
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        padded = f"  {word} "
        grams.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return grams


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity(a, b), float4 as PostgreSQL computes it."""
    ta, tb = _trigrams(a), _trigrams(b)
    if not ta or not tb:
        return 0.0
    common = len(ta & tb)
    return _float4(_float4(common) / _float4(len(ta) + len(tb) - common))


def evidence(a: str, b: str) -> float:
    if a == b:
        return 1.0
    return max(0.0, (similarity(a, b) - SIMILARITY_FLOOR) / (1 - SIMILARITY_FLOOR))


def drift(rules: Rules, amount: Decimal) -> Decimal:
    return max(rules.amount_abs, abs(amount) * Decimal(repr(rules.amount_pct)) / 100)


def _round4(score: float) -> float:
    return float(Decimal(f"{score:.15g}").quantize(Decimal("0.0001"), ROUND_HALF_UP))


def _days(a: Rec, b: Rec) -> int:
    return abs((a.booked_on - b.booked_on).days)


def tolerance_confidence(rules: Rules, left: Rec, right: Rec) -> float | None:
    """The tolerance pass's score of a pair inside drift and window; None when it is no candidate."""
    weights = dict(rules.weights)
    tolerance = drift(rules, left.amount)
    amount_score = 1 if tolerance == 0 else 1 - abs(left.amount - right.amount) / (2 * tolerance)
    date_score = 1 - Decimal(_days(left, right)) / (2 * (rules.date_window_days + 1))
    has_ref = left.ref != "" and right.ref != ""
    has_cp = left.cp != "" and right.cp != ""
    reference_score = evidence(left.ref, right.ref) if has_ref else 0.0
    counterparty_score = evidence(left.cp, right.cp) if has_cp else 0.0
    text_weight = (weights["reference"] if has_ref else 0) + (weights["counterparty"] if has_cp else 0)
    denominator = Decimal(repr(weights["amount"])) + Decimal(repr(weights["date"])) + Decimal(repr(text_weight))
    if denominator == 0:
        return None
    numeric_part = Decimal(repr(weights["amount"])) * amount_score + Decimal(repr(weights["date"])) * date_score
    score = (
        float(numeric_part) + weights["reference"] * reference_score + weights["counterparty"] * counterparty_score
    ) / float(denominator)
    if rules.require_evidence and not (reference_score > 0 or counterparty_score > 0):
        return None
    if text_weight == 0:
        score = min(score, min(NO_TEXT_EVIDENCE_CAP, round(rules.auto_threshold - 0.0001, 4)))
    return _round4(score)


def _candidates(name: str, rules: Rules, left: list[Rec], right: list[Rec]) -> list[tuple]:
    """(confidence, days, left, right) of every pair the exact or tolerance pass considers."""
    found = []
    for lrec in left:
        for rrec in right:
            if lrec.currency != rrec.currency or _days(lrec, rrec) > rules.date_window_days:
                continue
            if name == "exact":
                if lrec.ref != "" and lrec.ref == rrec.ref and lrec.amount == rrec.amount:
                    found.append((1.0, _days(lrec, rrec), lrec.id, rrec.id))
            elif abs(lrec.amount - rrec.amount) <= drift(rules, lrec.amount):
                confidence = tolerance_confidence(rules, lrec, rrec)
                if confidence is not None:
                    found.append((confidence, _days(lrec, rrec), lrec.id, rrec.id))
    return [c for c in found if c[0] >= rules.review_threshold]


def _with_rival(candidates: list[tuple], position: int) -> set[int]:
    best: dict[int, float] = {}
    for c in candidates:
        best[c[position]] = max(best.get(c[position], c[0]), c[0])
    close: dict[int, int] = {}
    for c in candidates:
        if c[0] >= best[c[position]] - AMBIGUITY_MARGIN:
            close[c[position]] = close.get(c[position], 0) + 1
    return {record_id for record_id, count in close.items() if count > 1}


def assign_greedy(candidates: list[tuple]) -> list[tuple]:
    """(confidence, left, right, ambiguous): repeatedly every pair that is both its records' best
    remaining choice (confidence desc, days, then the other record's id)."""
    rivals_left, rivals_right = _with_rival(candidates, 2), _with_rival(candidates, 3)
    remaining, chosen = list(candidates), []
    while remaining:
        best_of_left = {}
        for c in sorted(remaining, key=lambda c: (-c[0], c[1], c[3])):
            best_of_left.setdefault(c[2], c)
        best_of_right = {}
        for c in sorted(remaining, key=lambda c: (-c[0], c[1], c[2])):
            best_of_right.setdefault(c[3], c)
        taken = [c for c in best_of_left.values() if best_of_right[c[3]] is c]
        if not taken:
            break
        chosen += [(c[0], c[2], c[3], c[2] in rivals_left or c[3] in rivals_right) for c in taken]
        used_left, used_right = {c[2] for c in taken}, {c[3] for c in taken}
        remaining = [c for c in remaining if c[2] not in used_left and c[3] not in used_right]
    return chosen


def _groups(rules: Rules, one: list[Rec], many: list[Rec]) -> list[tuple]:
    """(one record, member ids) of every uncontested group that sums exactly to its record."""
    key = (lambda r: r.ref) if rules.group_key == "reference" else (lambda r: r.cp)
    fitting = []
    for o in one:
        if key(o) == "":
            continue
        members = [
            m for m in many
            if m.currency == o.currency and key(m) == key(o) and _days(m, o) <= rules.date_window_days
        ]  # fmt: skip
        if 2 <= len(members) <= rules.max_group_size and sum(m.amount for m in members) == o.amount:
            fitting.append((o, tuple(sorted(m.id for m in members))))
    wanted: dict[int, int] = {}
    for _, member_ids in fitting:
        for member_id in member_ids:
            wanted[member_id] = wanted.get(member_id, 0) + 1
    return [(o, ids) for o, ids in fitting if all(wanted[i] == 1 for i in ids)]


def _status(rules: Rules, confidence: float, ambiguous: bool) -> str:
    return "auto" if confidence >= rules.auto_threshold and not ambiguous else "suggested"


def match(records: list[Rec], rules: Rules) -> set[Proposed]:
    """Every match the passes propose, as the SQL matcher would on these (all open) records."""
    left = [r for r in records if r.side == "left"]
    right = [r for r in records if r.side == "right"]
    proposed: set[Proposed] = set()
    enabled = {"exact": rules.exact, "tolerance": rules.tolerance,
               "group_one_to_many": rules.group, "group_many_to_one": rules.group}  # fmt: skip
    for name in PASSES:
        if not enabled[name]:
            continue
        taken: set[int] = set()
        if name in ("exact", "tolerance"):
            for confidence, left_id, right_id, ambiguous in assign_greedy(_candidates(name, rules, left, right)):
                status = _status(rules, confidence, ambiguous)
                proposed.add(Proposed((left_id,), (right_id,), name, status, confidence))
                taken |= {left_id, right_id}
        else:
            confidence = GROUP_CONFIDENCE[rules.group_key]
            if confidence >= rules.review_threshold:
                one_is_left = name == "group_one_to_many"
                for o, member_ids in _groups(rules, *((left, right) if one_is_left else (right, left))):
                    ids = ((o.id,), member_ids) if one_is_left else (member_ids, (o.id,))
                    proposed.add(Proposed(*ids, "group", _status(rules, confidence, False), confidence))
                    taken |= {o.id, *member_ids}
        left = [r for r in left if r.id not in taken]
        right = [r for r in right if r.id not in taken]
    return proposed
