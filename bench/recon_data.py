"""Reconciliation benchmark data: a bank statement (left) and a ledger (right) with known truth.

    python bench/recon_data.py --left 100000 --seed 42 --out var/bench/recon-100k

Writes left.csv, right.csv (columns CSV_COLUMNS, header row included), truth.csv
(`kind,left_ids,right_ids`, ids `;`-joined) and meta.json (seed, profile, counts) into --out.
Stdlib only, one streamed pass over a shuffled list of group kinds (memory is the plan and the
set of used references: ~110 MB RSS at 1M per side). Left amounts are written as the bank
would ('1234.56', '-12.5', '100'), right amounts with four decimals ('1234.5600').

What the default NoiseProfile produces, as shares of the left records:

- exact (~70%): one left, one right; same currency and amount, references equal after
  `normalize_reference` (upper-case, drop everything that is not A-Z0-9) but in 65% of pairs
  formatted differently on the right (lower case, dashes removed, spaces or slashes instead),
  booked_on within ±2 days.
- noisy (~15%): one left, one right; amount drift (75% of pairs) |Δ| <= max(0.49% of the left
  amount, 1.00), booked_on within ±3 days; the right reference is missing (15%), has a typo
  (45%: a digit changed, two swapped, one dropped, prefix letters swapped), carries a "REF "
  prefix (10%) or is intact (30%, always with a drift); counterparty and description reworded
  (case, legal form dropped, sector abbreviated). Every noisy pair differs in amount or
  normalized reference, so it is never an exact pair in disguise.
- split (~5%): one left = exact sum of 2-4 right records (split_one_to_many), or 2-4 left =
  one right (split_many_to_one); same normalized reference on all, dates within ±3 days of
  the single side; with 4 parts at most every part is >= 10% of the total, so no part is
  within drift of the total.
- ambiguous (0.2%): one left with two identical right records, or two identical left records
  with one right (only external_id differs): either 1:1 pairing is as good as the other.
- unmatched (10% of n_left on each side): records with no counterpart; 30% are decoys that
  copy the currency and amount of a recent matched record, with a fresh reference and a date
  30-120 days before (left decoys) or after (right decoys) it.

References are unique per group and carry a Luhn check digit, so a typo'd reference never
equals another group's reference after normalization. Both files are in booked_on order, as
real exports are; external_ids are sequential per side (STMT-…, GL-…).

Scoring (`score`): a predicted match is a pair (set of left ids, set of right ids). It is a true
positive when it equals a truth group of kind exact, noisy or split_* exactly; a 1:1 pair inside
an ambiguous group (either of the equally good options) is neutral — neither a true nor a false
positive — and ambiguous groups are not required for recall; anything else (a split group
matched partially, a wrong partner, both ambiguous options at once) is a false positive.
Recall = tp / (number of exact + noisy + split_* groups).
"""

import argparse
import csv
import json
import math
import random
import re
import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

CSV_COLUMNS = ("external_id", "amount", "currency", "booked_on", "reference", "counterparty", "description")
TRUTH_COLUMNS = ("kind", "left_ids", "right_ids")
REQUIRED_KINDS = ("exact", "noisy", "split_one_to_many", "split_many_to_one")
# Traps (issue 13), one left and one right record each that must not be matched:
# currency_twin  same reference and amount, other currency (reason: currency_mismatch);
# near_stranger  amount within the default drift and dates within the window, but another
#                reference and counterparty (one side often without a counterparty).
TRAP_KINDS = ("currency_twin", "near_stranger")
KINDS = (*REQUIRED_KINDS, "ambiguous", "unmatched_left", "unmatched_right", *TRAP_KINDS)
GENERATOR_VERSION = 2

UNITS = 10_000  # amounts are integers in 1/10,000 (numeric(18,4)); floats never touch a total
FIRST_DAY = date(2024, 1, 1)
SPAN_DAYS = 1000  # base dates run from 2024-01-01 to late September 2026
DATE_MARGIN_DAYS = 130  # decoys and shifts reach this far outside the span
SPLIT_MIN_AMOUNT = 100.00  # parts are >= 10% of the total: >= 10.00 each

_REFERENCE_PADDING = re.compile(r"(^|[A-Z])0+(?=[0-9])")
_REF_PREFIXES = ("INV", "PO", "CN", "SO")
# Eight more prefixes only for sets whose groups would fill more than half of the first four's
# space (10M x 10M): smaller sets keep the references, and so the data, they always had.
_REF_PREFIXES_LARGE = (*_REF_PREFIXES, "DN", "RC", "BL", "CR", "DB", "PY", "RF", "ST")
_REF_YEARS = (2025, 2026)
_REF_SPACE = len(_REF_PREFIXES) * len(_REF_YEARS) * 1_000_000

_ADJECTIVES = [
    "Northern",
    "Southern",
    "Eastern",
    "Western",
    "Central",
    "Atlantic",
    "Pacific",
    "Alpine",
    "Baltic",
    "Nordic",
    "Coastal",
    "Golden",
    "Silver",
    "Blue",
    "Green",
    "Red",
    "Black",
    "White",
    "Grand",
    "Royal",
    "Prime",
    "Global",
    "United",
    "Allied",
    "Modern",
    "Classic",
    "Swift",
    "Bright",
    "Clear",
    "Solid",
    "Rapid",
    "Smart",
    "Urban",
    "Rural",
    "Iron",
    "Stone",
    "Oak",
    "Pine",
    "Cedar",
    "Maple",
    "River",
    "Lake",
    "Harbor",
    "Bay",
    "Summit",
    "Valley",
    "Ridge",
    "Meadow",
    "Forest",
    "Sun",
    "Star",
    "Moon",
    "Polar",
    "Metro",
    "Civic",
    "Pioneer",
    "Liberty",
    "Heritage",
    "Crown",
    "Eagle",
    "Falcon",
    "Lion",
    "Wolf",
    "Fox",
    "Bear",
    "Orion",
    "Apex",
    "Vertex",
    "Nova",
    "Zenith",
    "Delta",
    "Sigma",
    "Omega",
    "Alpha",
]
_NOUNS = [
    "Bridge",
    "Gate",
    "Tower",
    "Point",
    "Field",
    "Works",
    "Lane",
    "Square",
    "Harbour",
    "Line",
    "Path",
    "Way",
    "Peak",
    "Crest",
    "Shore",
    "Stream",
    "Spring",
    "Wells",
    "Mills",
    "Forge",
    "Yard",
    "Dock",
    "Port",
    "Haven",
    "Hill",
    "Wood",
    "Stone",
    "Brook",
    "Ford",
    "Grove",
    "Park",
    "Cross",
    "Rock",
    "Vale",
    "Moor",
    "Hall",
    "Court",
    "Garden",
    "Arrow",
    "Anchor",
    "Beacon",
    "Compass",
    "Harvest",
    "Lantern",
    "Mosaic",
    "Orbit",
    "Pillar",
    "Quarry",
    "Signal",
    "Tide",
    "Vector",
    "Vista",
    "Willow",
    "Aurora",
    "Cobalt",
    "Copper",
    "Granite",
    "Jade",
    "Onyx",
    "Pearl",
    "Ruby",
    "Sapphire",
    "Topaz",
    "Amber",
    "Ivory",
    "Scarlet",
    "Indigo",
    "Azure",
]
_SECTORS = (
    ("Logistics", "Log."),
    ("Trading", "Trdg"),
    ("Consulting", "Consult."),
    ("Engineering", "Eng."),
    ("Manufacturing", "Mfg"),
    ("Technologies", "Tech"),
    ("Solutions", "Sol."),
    ("Services", "Svcs"),
    ("Industries", "Ind."),
    ("International", "Intl"),
    ("Holdings", "Hldgs"),
    ("Systems", "Sys."),
    ("Foods", "Foods"),
    ("Pharma", "Pharma"),
    ("Energy", "Energy"),
    ("Media", "Media"),
    ("Textiles", "Text."),
    ("Chemicals", "Chem."),
    ("Furniture", "Furn."),
    ("Electronics", "Electr."),
    ("Construction", "Constr."),
    ("Transport", "Transp."),
    ("Software", "SW"),
    ("Packaging", "Pkg"),
    ("Automotive", "Auto"),
    ("Labs", "Labs"),
    ("Partners", "Ptnrs"),
    ("Supplies", "Suppl."),
    ("Retail", "Retail"),
    ("Design", "Dsgn"),
    ("Security", "Sec."),
    ("Marine", "Marine"),
    ("Aviation", "Aviat."),
    ("Medical", "Med."),
    ("Printing", "Print."),
    ("Paper", "Paper"),
    ("Metals", "Met."),
    ("Plastics", "Plast."),
    ("Robotics", "Robot."),
    ("Analytics", "Anlyt."),
)
_LEGAL_FORMS = ("GmbH", "AG", "Ltd", "LLC", "Inc.", "S.A.", "SAS", "B.V.", "S.r.l.", "Oy", "AB", "plc")
_BANK_DESCRIPTIONS = (
    "SEPA credit transfer {cp}",
    "Payment {cp}",
    "Incoming transfer {cp} settlement",
    "Card acquiring payout {cp}",
    "Direct debit {cp}",
    "Wire {cp} invoice payment",
    "Transfer from {cp} services {month}",
    "Remittance {cp} {month}",
)
_LEDGER_DESCRIPTIONS = (
    "Invoice {cp} {month}",
    "Customer payment {cp}",
    "Goods delivered {month} {cp}",
    "Services rendered {month}",
    "Subscription {month} {cp}",
    "Project milestone {cp}",
    "Consulting fees {month}",
    "Freight and handling {cp}",
)
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_CURRENCIES = (("EUR", 0.80), ("USD", 0.12), ("GBP", 0.08))


@dataclass(frozen=True)
class NoiseProfile:
    """The mix of a generated set. Shares are of n_left; exact takes what the others leave."""

    noisy_share: float = 0.15
    split_share: float = 0.05  # left records that are part of a split group
    many_to_one_fraction: float = 0.3  # of split groups: many left vs one right (else one left vs many right)
    max_split_parts: int = 4
    ambiguous_share: float = 0.002  # groups with two equally good partners
    unmatched_left_share: float = 0.10
    unmatched_right_share: float = 0.10
    decoy_fraction: float = 0.3  # of unmatched: same currency and amount as a recent record, far date
    decoy_min_gap_days: int = 30
    exact_max_date_shift_days: int = 2
    noisy_max_date_shift_days: int = 3
    split_max_date_shift_days: int = 3
    noisy_max_drift_pct: float = 0.0049  # of the left amount; < 0.5% relative to either side
    noisy_max_drift_abs: float = 1.00
    noisy_amount_drift_probability: float = 0.75
    noisy_reference_typo_probability: float = 0.45
    noisy_reference_missing_probability: float = 0.15
    noisy_reference_prefix_probability: float = 0.10  # "REF INV-…": similar, not equal after normalization
    negative_share: float = 0.08  # credit notes and refunds: both sides negative
    # Traps (issue 13), shares of n_left: exact pairs whose left reference pads its number with
    # zeros (INV-0002026-… vs INV2026…), currency twins and near strangers (TRAP_KINDS).
    padded_reference_share: float = 0.002
    currency_twin_share: float = 0.002
    near_stranger_share: float = 0.003
    sub_cent_share: float = 0.02  # amounts with 4 decimal places
    # Log-uniform amounts; with these bounds and dates over 1,000 days few left records
    # have an unrelated right record of the same currency and amount within ±3 days (0.67% at 1M x 1M).
    min_amount: float = 50.00
    max_amount: float = 2_000_000.00

    def __post_init__(self):
        shares = (self.noisy_share, self.split_share, self.ambiguous_share, self.unmatched_left_share)
        if any(s < 0 for s in (*shares, self.unmatched_right_share)) or sum(shares) > 1:
            raise ValueError("shares must be >= 0 and noisy + split + ambiguous + unmatched_left <= 1")
        if not 2 <= self.max_split_parts <= 9:  # the plan encodes the part count in one digit
            raise ValueError("max_split_parts must be between 2 and 9")
        if not 0 < self.min_amount < self.max_amount:
            raise ValueError("need 0 < min_amount < max_amount")


@dataclass
class GeneratedSet:
    left_csv: Path
    right_csv: Path
    truth_csv: Path
    meta_json: Path
    n_left: int
    n_right: int
    counts: dict[str, int]  # truth groups per kind
    seed: int
    seconds: float = 0.0


@dataclass
class Score:
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    neutral: int = 0  # predicted 1:1 pairs inside an ambiguous group: neither tp nor fp
    required: int = 0  # truth groups recall is measured against
    false_positives: list[tuple[str, str]] = field(default_factory=list, repr=False)  # first 100, as keys


def normalize_reference(reference: str) -> str:
    """The equality the exact pass uses: upper-case, everything that is not A-Z or 0-9 dropped,
    then the zero padding of a number that follows letters (INV-0000109888 == INV109888), as
    reconciliation.models.normalized_reference does in SQL."""
    kept = "".join(ch for ch in reference.upper() if "A" <= ch <= "Z" or "0" <= ch <= "9")
    return _REFERENCE_PADDING.sub(r"\1", kept)


def parse_amount_units(text: str) -> int:
    """'-12.5' -> -125000: the amount in 1/10,000, exactly."""
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    value = int(whole or "0") * UNITS + int((frac + "0000")[:4])
    return -value if negative else value


def group_key(left_ids: Iterable[str], right_ids: Iterable[str]) -> str:
    """A canonical, hashable form of (left ids, right ids) that is cheap to hold a million of."""
    return ";".join(sorted(left_ids)) + "|" + ";".join(sorted(right_ids))


# ---------------------------------------------------------------- generation


def _luhn_sum(digits: str, first_position: int = 0) -> int:
    """Luhn's weighted digit sum; positions count from the right, even ones (0, 2, ...) doubled."""
    total = 0
    for position, ch in enumerate(reversed(digits), start=first_position):
        d = ord(ch) - 48
        if position % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def _luhn_digit(digits: str) -> str:
    return str((10 - _luhn_sum(digits) % 10) % 10)


# The check digit of year + 6 digits from three table lookups: generating a million references
# digit by digit cost a tenth of the run.
_LUHN_LOW = [_luhn_sum(f"{c:03d}") for c in range(1000)]
_LUHN_HIGH = [_luhn_sum(f"{c:03d}", 3) for c in range(1000)]


def _format_min(units: int) -> str:
    """Bank style: as few decimals as needed ('1234.56', '-12.5', '100')."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:04d}".rstrip("0")


def _format_fixed(units: int) -> str:
    """Ledger style: always four decimals ('1234.5600')."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNITS)
    return f"{sign}{whole}.{frac:04d}"


class _Generator:
    def __init__(self, rng: random.Random, noise: NoiseProfile, n_left: int = 0):
        self.rng = rng
        self.noise = noise
        self.ref_prefixes = _REF_PREFIXES_LARGE if n_left > _REF_SPACE // 3 else _REF_PREFIXES
        self.ref_space = len(self.ref_prefixes) * len(_REF_YEARS) * 1_000_000
        # Drawn at random and kept unique with a set: a cheap arithmetic permutation made the references
        # of neighbouring groups (close in date) look alike, which a similarity pass would notice.
        self.references_used: set[int] = set()
        self.luhn_years = [_luhn_sum(str(year), 6) for year in _REF_YEARS]
        offsets = range(-DATE_MARGIN_DAYS, SPAN_DAYS + DATE_MARGIN_DAYS + 1)
        days = [FIRST_DAY + timedelta(days=offset) for offset in offsets]
        self.dates = [d.isoformat() for d in days]
        self.month_names = [_MONTHS[d.month - 1] for d in days]
        self.log_min = math.log(noise.min_amount * UNITS)
        self.log_span = math.log(noise.max_amount * UNITS) - self.log_min

    def date(self, day: int) -> str:
        return self.dates[day + DATE_MARGIN_DAYS]

    def currency(self) -> str:
        r = self.rng.random()
        for code, share in _CURRENCIES:
            if r < share:
                return code
            r -= share
        return _CURRENCIES[0][0]

    def amount(self, *, minimum: float | None = None) -> int:
        """Log-uniform between min (or `minimum`) and max amount, in cents (or 1/10,000 for a few)."""
        rng, noise = self.rng, self.noise
        if minimum is None:
            units = int(math.exp(self.log_min + rng.random() * self.log_span))
        else:
            low = math.log(minimum * UNITS)
            units = int(math.exp(low + rng.random() * (self.log_min + self.log_span - low)))
        if rng.random() >= noise.sub_cent_share:
            units -= units % 100
        if rng.random() < noise.negative_share:
            units = -units
        return units

    def reference(self) -> str:
        used = self.references_used
        if len(used) > self.ref_space // 2:
            raise ValueError("more groups than the reference space holds comfortably")
        n = int(self.rng.random() * self.ref_space)
        while n in used:
            n = int(self.rng.random() * self.ref_space)
        used.add(n)
        n, base = divmod(n, 1_000_000)
        prefix_index, year_index = divmod(n, len(_REF_YEARS))
        high, low = divmod(base, 1000)
        check = (10 - (self.luhn_years[year_index] + _LUHN_HIGH[high] + _LUHN_LOW[low]) % 10) % 10
        return f"{self.ref_prefixes[prefix_index]}-{_REF_YEARS[year_index]}-{base:06d}{check}"

    def right_reference_format(self, reference: str) -> str:
        """The same reference as a ledger might write it: equal after normalize_reference."""
        r = self.rng.random()
        if r < 0.35 or not reference:
            return reference
        if r < 0.55:
            return reference.lower()
        if r < 0.75:
            return reference.replace("-", "")
        if r < 0.90:
            return reference.replace("-", " ")
        prefix, year, number = reference.split("-")
        return f"{prefix}/{year}/{number}".lower()

    def typo(self, reference: str) -> str:
        """A near miss: one digit changed, two adjacent digits swapped, a digit dropped, or prefix letters swapped.

        The Luhn digit makes sure the result is no other group's reference.
        """
        rng = self.rng
        prefix, year, number = reference.split("-")
        kind = rng.random()
        if kind < 0.4:
            i = int(rng.random() * len(number))
            replacement = str((int(number[i]) + 1 + int(rng.random() * 9)) % 10)
            number = number[:i] + replacement + number[i + 1 :]
        elif kind < 0.7:
            i = int(rng.random() * (len(number) - 1))
            if number[i] == number[i + 1] or {number[i], number[i + 1]} == {"0", "9"}:
                # Luhn cannot see 09 <-> 90: change a digit instead
                number = number[:i] + str((int(number[i]) + 5) % 10) + number[i + 1 :]
            else:
                number = number[:i] + number[i + 1] + number[i] + number[i + 2 :]
        elif kind < 0.9:
            i = int(rng.random() * len(number))
            number = number[:i] + number[i + 1 :]
        else:
            prefix = prefix[::-1] if len(set(prefix)) > 1 else prefix + "X"
        return f"{prefix}-{year}-{number}"

    def counterparty(self) -> tuple[str, str, str, str]:
        rng = self.rng
        return (
            _ADJECTIVES[int(rng.random() * len(_ADJECTIVES))],
            _NOUNS[int(rng.random() * len(_NOUNS))],
            _SECTORS[int(rng.random() * len(_SECTORS))],
            _LEGAL_FORMS[int(rng.random() * len(_LEGAL_FORMS))],
        )

    @staticmethod
    def counterparty_name(parts) -> str:
        adjective, noun, (sector, _), legal = parts
        return f"{adjective} {noun} {sector} {legal}"

    def counterparty_variant(self, parts) -> str:
        """The same company as the other side spells it: legal form dropped, sector abbreviated, case changed."""
        adjective, noun, (sector, short), legal = parts
        r = self.rng.random()
        if r < 0.3:
            return f"{adjective} {noun} {sector}"
        if r < 0.55:
            return f"{adjective} {noun} {short} {legal}"
        if r < 0.8:
            return f"{adjective} {noun} {sector} {legal}".upper()
        return f"{adjective}-{noun} {short}"

    def description(self, templates, cp_parts, day: int) -> str:
        adjective, noun, _, _ = cp_parts
        template = templates[int(self.rng.random() * len(templates))]
        return template.format(cp=f"{adjective} {noun}", month=self.month_names[day + DATE_MARGIN_DAYS])

    def shift(self, max_days: int) -> int:
        return int(self.rng.random() * (2 * max_days + 1)) - max_days

    def drift(self, units: int) -> int:
        """A non-zero change of at most max(pct of |amount|, abs), in cents, same sign kept."""
        noise = self.noise
        bound = max(int(abs(units) * noise.noisy_max_drift_pct), int(noise.noisy_max_drift_abs * UNITS))
        bound -= bound % 100
        delta = 100 * (1 + int(self.rng.random() * (bound // 100)))
        delta = min(delta, abs(units) - 100)  # never flips the sign or reaches zero
        return delta if self.rng.random() < 0.5 else -delta

    def split_parts(self, total: int, parts: int) -> list[int]:
        """Cent parts summing exactly to total, each >= ~10% of it (weights 1..3)."""
        weights = [1 + 2 * self.rng.random() for _ in range(parts)]
        scale = sum(weights)
        sign = -1 if total < 0 else 1
        magnitude = abs(total)
        out = [sign * (int(magnitude * w / scale) // 100 * 100) for w in weights[:-1]]
        out.append(total - sum(out))
        return out


def _trap(code: int, gen: "_Generator", day: int, left_row, right_row, truth) -> None:
    """Write one trap (codes 50-52 of _plan) through the generator's row and truth writers."""
    rng = gen.rng
    cp = gen.counterparty()
    reference = gen.reference()
    if code == 50:  # the exact pass must see through zero padding after the letters
        units, currency = gen.amount(), gen.currency()
        prefix, year, number = reference.split("-")
        lid = left_row(units, currency, day, f"{prefix}-000{year}-{number}", gen.counterparty_name(cp), "")
        right_cp = gen.counterparty_variant(cp)
        rid = right_row(units, currency, day + gen.shift(1), f"{prefix}{year}{number}", right_cp, "")
        truth("exact", (lid,), (rid,))
    elif code == 51:  # same reference and amount, booked in another currency
        units, currency = gen.amount(), gen.currency()
        other = next(c for c, _ in _CURRENCIES if c != currency)
        lid = left_row(units, currency, day, reference, gen.counterparty_name(cp), "")
        rid = right_row(units, other, day + gen.shift(1), gen.right_reference_format(reference),
                        gen.counterparty_variant(cp), "")  # fmt: skip
        truth("currency_twin", (lid,), (rid,))
    else:  # a large amount: the default drift (0.5%) leaves room for an unrelated record
        units, currency = gen.amount(minimum=20_000.00), gen.currency()
        units -= units % 100
        delta = 100 * (1 + int(rng.random() * (abs(units) * 4 // 1000 // 100)))
        left_cp = "" if rng.random() < 0.5 else gen.counterparty_name(cp)
        right_reference = "" if rng.random() < 0.25 else gen.reference()
        lid = left_row(units, currency, day, reference, left_cp, "")
        rid = right_row(units + delta, currency, day + gen.shift(2), right_reference,
                        gen.counterparty_name(gen.counterparty()), "")  # fmt: skip
        truth("near_stranger", (lid,), (rid,))


def _plan(n_left: int, noise: NoiseProfile, rng: random.Random) -> tuple[list[int], int]:
    """Codes of every group and unmatched record, shuffled; exact pairs fill what is left of n_left.

    Codes: 0 exact, 1 noisy, 10+k one left / k right, 20+k k left / one right, 30 ambiguous with
    two right, 31 ambiguous with two left, 40 unmatched left, 41 unmatched right, 50 exact with a
    zero-padded left reference, 51 currency twin, 52 near stranger.
    """
    codes: list[int] = []
    left_used = 0
    for code, share in ((50, noise.padded_reference_share), (51, noise.currency_twin_share),
                        (52, noise.near_stranger_share)):  # fmt: skip
        n_traps = round(n_left * share)
        codes += [code] * n_traps
        left_used += n_traps
    n_noisy = round(n_left * noise.noisy_share)
    codes += [1] * n_noisy
    left_used += n_noisy
    n_ambiguous = round(n_left * noise.ambiguous_share)
    for i in range(n_ambiguous):
        codes.append(30 + i % 2)
        left_used += 1 + i % 2
    split_budget = round(n_left * noise.split_share)
    split_used = 0
    while split_used < split_budget:
        parts = 2 + int(rng.random() * (noise.max_split_parts - 1))
        remaining = split_budget - split_used
        if rng.random() < noise.many_to_one_fraction and remaining >= 2:
            parts = min(parts, remaining)
            codes.append(20 + parts)
            split_used += parts
        else:
            codes.append(10 + parts)
            split_used += 1
    left_used += split_used
    n_unmatched_left = round(n_left * noise.unmatched_left_share)
    codes += [40] * n_unmatched_left
    left_used += n_unmatched_left
    codes += [41] * round(n_left * noise.unmatched_right_share)
    n_exact = n_left - left_used
    if n_exact < 0:
        raise ValueError(f"the profile needs more than {n_left} left records; lower the shares")
    codes += [0] * n_exact
    rng.shuffle(codes)
    return codes, n_exact


def generate(
    *, n_left: int, seed: int = 42, noise: NoiseProfile | None = None, out_dir: Path, reuse: bool = False
) -> GeneratedSet:
    """Write left.csv, right.csv, truth.csv and meta.json into out_dir; the same arguments give the same bytes.

    reuse=True returns the set already in out_dir when its meta.json says it was made with the
    same n_left, seed, profile and generator version.
    """
    if n_left < 1:
        raise ValueError("n_left must be >= 1")
    noise = noise or NoiseProfile()
    out_dir = Path(out_dir)
    if reuse and (existing := load_generated(out_dir)) is not None:
        meta = json.loads(existing.meta_json.read_text())
        if (
            meta.get("n_left") == n_left
            and meta.get("seed") == seed
            and meta.get("noise") == asdict(noise)
            and meta.get("generator_version") == GENERATOR_VERSION
        ):
            return existing
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    gen = _Generator(rng, noise, n_left)
    codes, _ = _plan(n_left, noise, rng)
    counts = dict.fromkeys(KINDS, 0)

    left_path, right_path, truth_path = out_dir / "left.csv", out_dir / "right.csv", out_dir / "truth.csv"
    header = ",".join(CSV_COLUMNS) + "\n"
    left_lines: list[str] = [header]
    right_lines: list[str] = [header]
    truth_lines: list[str] = [",".join(TRUTH_COLUMNS) + "\n"]
    left_n = right_n = 0
    last_left_amount = last_right_amount = None  # (units, currency) of the latest matched record
    total = len(codes)
    rand = rng.random

    with (
        left_path.open("w", newline="") as left_file,
        right_path.open("w", newline="") as right_file,
        truth_path.open("w", newline="") as truth_file,
    ):

        def left_row(units, currency, day, reference, counterparty, description) -> str:
            nonlocal left_n
            left_n += 1
            external_id = f"STMT-{left_n:08d}"
            left_lines.append(
                f"{external_id},{_format_min(units)},{currency},{gen.date(day)},{reference},"
                f"{counterparty},{description}\n"
            )
            return external_id

        def right_row(units, currency, day, reference, counterparty, description) -> str:
            nonlocal right_n
            right_n += 1
            external_id = f"GL-{right_n:08d}"
            right_lines.append(
                f"{external_id},{_format_fixed(units)},{currency},{gen.date(day)},{reference},"
                f"{counterparty},{description}\n"
            )
            return external_id

        def truth(kind, left_ids, right_ids):
            counts[kind] += 1
            truth_lines.append(f"{kind},{';'.join(left_ids)},{';'.join(right_ids)}\n")

        for position, code in enumerate(codes):
            day = position * SPAN_DAYS // total
            if code in (0, 1, 30, 31):
                currency = gen.currency()
                units = gen.amount()
                reference = gen.reference()
                cp = gen.counterparty()
                left_cp = gen.counterparty_name(cp)
                left_desc = gen.description(_BANK_DESCRIPTIONS, cp, day)
                if code == 0:
                    lid = left_row(units, currency, day, reference, left_cp, left_desc)
                    rid = right_row(
                        units,
                        currency,
                        day + gen.shift(noise.exact_max_date_shift_days),
                        gen.right_reference_format(reference),
                        gen.counterparty_variant(cp) if rand() < 0.5 else left_cp,
                        gen.description(_LEDGER_DESCRIPTIONS, cp, day),
                    )
                    truth("exact", (lid,), (rid,))
                elif code == 1:
                    right_units = units
                    if rand() < noise.noisy_amount_drift_probability:
                        right_units = units + gen.drift(units)
                    r = rand()
                    if r < noise.noisy_reference_missing_probability:
                        right_reference = ""
                    elif r < noise.noisy_reference_missing_probability + noise.noisy_reference_typo_probability:
                        right_reference = gen.right_reference_format(gen.typo(reference))
                    elif r < (
                        noise.noisy_reference_missing_probability
                        + noise.noisy_reference_typo_probability
                        + noise.noisy_reference_prefix_probability
                    ):
                        right_reference = "REF " + reference
                    elif right_units == units:  # must not be an exact pair in disguise
                        right_reference = gen.right_reference_format(gen.typo(reference))
                    else:
                        right_reference = gen.right_reference_format(reference)
                    lid = left_row(units, currency, day, reference, left_cp, left_desc)
                    rid = right_row(
                        right_units,
                        currency,
                        day + gen.shift(noise.noisy_max_date_shift_days),
                        right_reference,
                        gen.counterparty_variant(cp),
                        gen.description(_LEDGER_DESCRIPTIONS, cp, day),
                    )
                    truth("noisy", (lid,), (rid,))
                else:  # ambiguous: duplicates identical in every field but external_id
                    right_day = day + gen.shift(noise.exact_max_date_shift_days)
                    right_reference = gen.right_reference_format(reference)
                    right_cp = gen.counterparty_variant(cp)
                    right_desc = gen.description(_LEDGER_DESCRIPTIONS, cp, day)
                    copies = 2 if code == 31 else 1
                    lids = [left_row(units, currency, day, reference, left_cp, left_desc) for _ in range(copies)]
                    rids = [
                        right_row(units, currency, right_day, right_reference, right_cp, right_desc)
                        for _ in range(3 - copies)
                    ]
                    truth("ambiguous", lids, rids)
                last_left_amount = (units, currency)
                last_right_amount = (units, currency)
            elif code < 30:  # split groups
                parts = code % 10
                currency = gen.currency()
                units = gen.amount(minimum=SPLIT_MIN_AMOUNT)
                reference = gen.reference()
                cp = gen.counterparty()
                pieces = gen.split_parts(units, parts)
                if code < 20:
                    lid = left_row(
                        units,
                        currency,
                        day,
                        reference,
                        gen.counterparty_name(cp),
                        gen.description(_BANK_DESCRIPTIONS, cp, day),
                    )
                    rids = [
                        right_row(
                            piece,
                            currency,
                            day + gen.shift(noise.split_max_date_shift_days),
                            gen.right_reference_format(reference),
                            gen.counterparty_variant(cp),
                            gen.description(_LEDGER_DESCRIPTIONS, cp, day),
                        )
                        for piece in pieces
                    ]
                    truth("split_one_to_many", (lid,), rids)
                else:
                    lids = [
                        left_row(
                            piece,
                            currency,
                            day + gen.shift(noise.split_max_date_shift_days),
                            reference,
                            gen.counterparty_name(cp),
                            gen.description(_BANK_DESCRIPTIONS, cp, day),
                        )
                        for piece in pieces
                    ]
                    rid = right_row(
                        units,
                        currency,
                        day,
                        gen.right_reference_format(reference),
                        gen.counterparty_variant(cp),
                        gen.description(_LEDGER_DESCRIPTIONS, cp, day),
                    )
                    truth("split_many_to_one", lids, (rid,))
                last_left_amount = last_right_amount = (units, currency)
            elif code >= 50:
                _trap(code, gen, day, left_row, right_row, truth)
            else:  # unmatched, some of them decoys of a recent record on the other side
                cp = gen.counterparty()
                is_left = code == 40
                decoy_of = last_right_amount if is_left else last_left_amount
                if decoy_of is not None and rand() < noise.decoy_fraction:
                    units, currency = decoy_of
                    # left decoys before, right decoys after their model: two decoys of one amount stay far apart too
                    gap = noise.decoy_min_gap_days + int(rand() * 91)
                    record_day = day - gap if is_left else day + gap
                else:
                    units, currency = gen.amount(), gen.currency()
                    record_day = day
                reference = gen.reference() if rand() < 0.85 else ""
                if is_left:
                    lid = left_row(
                        units,
                        currency,
                        record_day,
                        reference,
                        gen.counterparty_name(cp),
                        gen.description(_BANK_DESCRIPTIONS, cp, record_day),
                    )
                    truth("unmatched_left", (lid,), ())
                else:
                    rid = right_row(
                        units,
                        currency,
                        record_day,
                        gen.right_reference_format(reference),
                        gen.counterparty_name(cp),
                        gen.description(_LEDGER_DESCRIPTIONS, cp, record_day),
                    )
                    truth("unmatched_right", (), (rid,))
            if len(left_lines) >= 20_000:
                left_file.writelines(left_lines)
                right_file.writelines(right_lines)
                truth_file.writelines(truth_lines)
                left_lines.clear()
                right_lines.clear()
                truth_lines.clear()
        left_file.writelines(left_lines)
        right_file.writelines(right_lines)
        truth_file.writelines(truth_lines)

    meta_path = out_dir / "meta.json"
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_left": left_n,
        "n_right": right_n,
        "counts": counts,
        "noise": asdict(noise),
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return GeneratedSet(
        left_csv=left_path,
        right_csv=right_path,
        truth_csv=truth_path,
        meta_json=meta_path,
        n_left=left_n,
        n_right=right_n,
        counts=counts,
        seed=seed,
        seconds=time.perf_counter() - started,
    )


def load_generated(out_dir: Path) -> GeneratedSet | None:
    """The set in out_dir as its meta.json describes it, or None when any file is missing."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in ("left.csv", "right.csv", "truth.csv", "meta.json")]
    if not all(p.exists() for p in paths):
        return None
    meta = json.loads(paths[3].read_text())
    return GeneratedSet(
        *paths, n_left=meta["n_left"], n_right=meta["n_right"], counts=meta["counts"], seed=meta["seed"]
    )


# ---------------------------------------------------------------- scoring


def read_truth(truth_path: Path) -> Iterable[tuple[str, list[str], list[str]]]:
    """(kind, left ids, right ids) per truth group."""
    with Path(truth_path).open(newline="") as f:
        reader = csv.reader(f)
        if next(reader) != list(TRUTH_COLUMNS):
            raise ValueError(f"{truth_path}: not a truth file (header must be {','.join(TRUTH_COLUMNS)})")
        for kind, left, right in reader:
            yield kind, left.split(";") if left else [], right.split(";") if right else []


def score(
    truth_path: Path,
    predicted_pairs: Iterable[tuple[Collection[str], Collection[str]]],
    *,
    within_left: Collection[str] | None = None,
) -> Score:
    """Precision and recall of predicted matches (left ids, right ids) against truth.csv (rules in the module doc).

    within_left: score a run that only looked at some left records (a baseline's sample): only
    truth groups with a left id in it are required for recall. Predictions are all counted.
    Duplicate predictions count once. Precision is 1.0 when nothing was predicted.
    """
    within = set(within_left) if within_left is not None else None
    required: set[str] = set()
    neutral_pairs: set[str] = set()
    for kind, left, right in read_truth(truth_path):
        if kind in REQUIRED_KINDS:
            if within is None or any(i in within for i in left):
                required.add(group_key(left, right))
        elif kind == "ambiguous":
            for lid in left:
                for rid in right:
                    neutral_pairs.add(f"{lid}|{rid}")
    predicted = {group_key(left, right) for left, right in predicted_pairs}
    tp = len(predicted & required)
    neutral_keys = (predicted - required) & neutral_pairs
    false_keys = sorted(predicted - required - neutral_keys)
    fp = len(false_keys)
    return Score(
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / len(required) if required else 1.0,
        tp=tp,
        fp=fp,
        fn=len(required) - tp,
        neutral=len(neutral_keys),
        required=len(required),
        false_positives=[tuple(k.split("|")) for k in false_keys[:100]],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--left", type=int, default=100_000, help="left (bank statement) records")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True, help="directory for left.csv, right.csv, truth.csv")
    args = parser.parse_args(argv)
    generated = generate(n_left=args.left, seed=args.seed, out_dir=args.out)
    print(
        f"{generated.n_left:,} left, {generated.n_right:,} right in {generated.seconds:.1f}s -> {args.out}\n"
        + "\n".join(f"  {kind:<20}{n:>10,}" for kind, n in generated.counts.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
