"""A job's matching rules: the JSON a tenant stores on ReconciliationJob.rules, validated and typed.

Every key is optional; what is missing takes the default below (docs/reconciliation.md):

    {
      "date_window_days": 3,            # booked_on may differ by this many days, both sides
      "auto_threshold": 0.6,            # confidence >= this: matched automatically
      "review_threshold": 0.4,          # confidence >= this (and below auto): suggested to a person
      "passes": {
        "exact":     {"enabled": true},
        "tolerance": {"enabled": true, "amount_abs": "1.00", "amount_pct": 0.5,
                      "weights": {"amount": 0.25, "date": 0.1, "reference": 0.35, "counterparty": 0.3}},
                                        # each weight 0..100, at least one above 0
        "group":     {"enabled": true, "key": "reference", "max_group_size": 5}
      }
    }

Errors name the JSON path of what is wrong (`passes.tolerance.amount_pct`), so the API's 400 can
say exactly which value to fix.
"""

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from jsonschema import Draft202012Validator

from reconciliation.errors import InvalidRules

MAX_DATE_WINDOW_DAYS = 31
MAX_GROUP_SIZE = 10
# Weights are relative; 100 is far beyond any useful ratio and keeps every score's arithmetic finite
# (1e308 saved fine and then overflowed in every run).
MAX_WEIGHT = 100
WEIGHT_NAMES = ("amount", "date", "reference", "counterparty")

_unit_interval = {"type": "number", "minimum": 0, "maximum": 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "date_window_days": {"type": "integer", "minimum": 0, "maximum": MAX_DATE_WINDOW_DAYS},
        "auto_threshold": _unit_interval,
        "review_threshold": _unit_interval,
        "passes": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "exact": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"enabled": {"type": "boolean"}},
                },
                "tolerance": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        # A string keeps money exact; numbers are accepted for convenience.
                        "amount_abs": {"type": ["string", "number"]},
                        "amount_pct": {"type": "number", "minimum": 0, "maximum": 50},
                        "weights": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                name: {"type": "number", "minimum": 0, "maximum": MAX_WEIGHT} for name in WEIGHT_NAMES
                            },
                        },
                    },
                },
                "group": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "key": {"enum": ["reference", "counterparty"]},
                        "max_group_size": {"type": "integer", "minimum": 2, "maximum": MAX_GROUP_SIZE},
                    },
                },
            },
        },
    },
}
_validator = Draft202012Validator(SCHEMA)


@dataclass(frozen=True)
class ToleranceRules:
    enabled: bool = True
    amount_abs: Decimal = Decimal("1.00")
    amount_pct: float = 0.5
    weights: dict = field(default_factory=lambda: {"amount": 0.25, "date": 0.1, "reference": 0.35, "counterparty": 0.3})

    def drift(self, amount: Decimal) -> Decimal:
        """The amount drift allowed around `amount`: the larger of the absolute and the percentage
        (matching._tolerance_sql is the same rule in SQL)."""
        return max(self.amount_abs, abs(amount) * Decimal(str(self.amount_pct)) / 100)


@dataclass(frozen=True)
class GroupRules:
    enabled: bool = True
    key: str = "reference"
    max_group_size: int = 5


@dataclass(frozen=True)
class MatchingRules:
    date_window_days: int = 3
    # Measured on bench/recon_data.py sets (docs/reconciliation.md): no wrong pair scored above 0.535.
    auto_threshold: float = 0.6
    review_threshold: float = 0.4
    exact_enabled: bool = True
    tolerance: ToleranceRules = field(default_factory=ToleranceRules)
    group: GroupRules = field(default_factory=GroupRules)


def _path(error) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "rules"


def parse_rules(raw) -> MatchingRules:
    """Validate a rules document and return it typed with defaults filled in; InvalidRules names
    every bad path."""
    if raw is None:
        raw = {}
    errors = {}
    for error in sorted(_validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        errors.setdefault(_path(error), error.message)
    if errors:
        raise InvalidRules(errors)

    passes = raw.get("passes", {})
    tolerance_raw = passes.get("tolerance", {})
    group_raw = passes.get("group", {})
    try:
        amount_abs = Decimal(str(tolerance_raw.get("amount_abs", "1.00")))
    except InvalidOperation:
        raise InvalidRules({"passes.tolerance.amount_abs": 'must be a decimal amount such as "1.00"'}) from None
    if not amount_abs.is_finite() or amount_abs < 0 or amount_abs > Decimal("1000000"):
        raise InvalidRules({"passes.tolerance.amount_abs": "must be between 0 and 1000000"})
    # Amounts have at most 4 decimals; "1E-999999" would save and then overflow PostgreSQL's numeric.
    if amount_abs != amount_abs.quantize(Decimal("0.0001")):
        raise InvalidRules({"passes.tolerance.amount_abs": "must have at most 4 decimal places"})

    weights = {**ToleranceRules().weights, **tolerance_raw.get("weights", {})}
    if sum(weights.values()) <= 0:
        raise InvalidRules({"passes.tolerance.weights": "at least one weight must be above 0"})
    rules = MatchingRules(
        date_window_days=raw.get("date_window_days", 3),
        auto_threshold=float(raw.get("auto_threshold", MatchingRules.auto_threshold)),
        review_threshold=float(raw.get("review_threshold", MatchingRules.review_threshold)),
        exact_enabled=passes.get("exact", {}).get("enabled", True),
        tolerance=ToleranceRules(
            enabled=tolerance_raw.get("enabled", True),
            amount_abs=amount_abs,
            amount_pct=float(tolerance_raw.get("amount_pct", 0.5)),
            weights=weights,
        ),
        group=GroupRules(
            enabled=group_raw.get("enabled", True),
            key=group_raw.get("key", "reference"),
            max_group_size=group_raw.get("max_group_size", 5),
        ),
    )
    if rules.review_threshold > rules.auto_threshold:
        raise InvalidRules({"review_threshold": "must not be above auto_threshold"})
    return rules
