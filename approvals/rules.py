"""The rule language of approval rules: validation, compilation to SQL, a plain-Python reference.

A rule's `conditions` is a tree of nodes (docs/approvals-rules.md):

    {"all": [node, ...]}   {"any": [node, ...]}   {"not": node}   {"field": F, "op": OP, "value": V}

Every rule is evaluated two ways that must agree exactly: `matching_versions` (one SQL query over a
queryset, what the automation and the preview run) and `evaluate_conditions` over `version_facts`
(plain Python, the reference the property test holds SQL to). Hence the restrictions: no string
ordering (collations differ), a regex subset both engines read alike, ages computed at a given
`as_of` instead of `now()`, and integer arithmetic that is exact on both sides.
"""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import reduce
from operator import and_, or_

from django.db.models import (
    BigIntegerField,
    DateTimeField,
    Exists,
    Expression,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Length
from django.utils import timezone
from jsonschema import Draft202012Validator, ValidationError

from approvals.models import AuthorProfile, EntityType, Version
from approvals.rule_regex import OutsideSubset, python_regex
from project.errors import DomainError

MAX_DEPTH = 10
MAX_NODES = 100
MAX_IN_VALUES = 100
MAX_REGEX_CHARS = 200
# Longer than any title (300) and any sensible phrase to look for in content.
MAX_STRING_CHARS = 1000
DESCRIBE_MAX_CHARS = 500  # Version.decision_reason and AutomationAuditLog.reason are varchar(500)
# The range of PostgreSQL bigint, the type every integer field is compared as.
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1

_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)


class FieldType(StrEnum):
    STRING = "string"  # a short code compared whole (entity_type)
    TEXT = "text"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING_LIST = "list of strings"


OPERATORS: dict[FieldType, tuple[str, ...]] = {
    FieldType.STRING: ("eq", "ne", "in"),
    FieldType.TEXT: ("eq", "ne", "in", "contains", "matches"),
    FieldType.INTEGER: ("eq", "ne", "lt", "lte", "gt", "gte", "in"),
    FieldType.BOOLEAN: ("eq", "ne"),
    FieldType.STRING_LIST: ("contains",),
}
ALL_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "matches")
_ORDERING_LOOKUPS = {"lt": "lt", "lte": "lte", "gt": "gt", "gte": "gte"}


class RuleInvalid(DomainError):
    """The conditions are not a valid rule; `path` says where ("conditions.all[1].op")."""

    http_code = "invalid_rule"
    http_field = "conditions"

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


# --- Fields -----------------------------------------------------------------------------------------


class _WholeUnitsSince(Func):
    """floor((as_of - column) / unit) as a bigint, exact to the microsecond.

    EXTRACT(EPOCH FROM interval) is an exact numeric. A numeric quotient keeps at least the
    divisor's decimals, so with 20 of them it cannot round up to the next whole unit: a quotient
    short of a whole number is short by at least 1 µs / 1 day ≈ 1.2e-11.
    """

    template = "FLOOR(EXTRACT(EPOCH FROM (%(expressions)s)) / %(unit_s)s.00000000000000000000)::bigint"
    arg_joiner = " - "
    output_field = BigIntegerField()

    def __init__(self, column: str, *, as_of: datetime, unit: timedelta):
        super().__init__(Cast(Value(as_of), DateTimeField()), F(column), unit_s=unit // timedelta(seconds=1))


def _content_length(as_of: datetime) -> Expression:
    # length() counts characters in a UTF-8 database, as len() does.
    return Length("content", output_field=BigIntegerField())


def _author_trust_level(as_of: datetime) -> Expression:
    return Coalesce(F("author__author_profile__trust_level"), Value(0), output_field=BigIntegerField())


def _author_account_age_days(as_of: datetime) -> Expression:
    return _WholeUnitsSince("author__date_joined", as_of=as_of, unit=_DAY)


def _version_age_minutes(as_of: datetime) -> Expression:
    return _WholeUnitsSince("created_at", as_of=as_of, unit=_MINUTE)


def _entity_has_approved_versions(as_of: datetime) -> Expression:
    # Served by version_entity_idx (entity_type, entity_id, created_at).
    return Exists(
        Version.objects.filter(
            entity_type=OuterRef("entity_type"),
            entity_id=OuterRef("entity_id"),
            status=Version.Status.APPROVED,
            created_at__lt=OuterRef("created_at"),
        )
    )


@dataclass(frozen=True)
class RuleField:
    name: str
    type: FieldType
    description: str
    # Exactly one of: the ORM path of a column the compiled Q filters on directly, or a function
    # of as_of building the SQL expression of a computed value.
    column: str | None = None
    expression: Callable[[datetime], Expression] | None = None

    @property
    def fact(self) -> str:
        """The VersionFacts attribute holding this field's value."""
        return self.name.replace(".", "_")

    @property
    def annotation(self) -> str | None:
        """The name annotate_rule_fields gives a computed field, e.g. rule_version_age_minutes."""
        return f"rule_{self.fact}" if self.expression else None


RULE_FIELDS: dict[str, RuleField] = {
    field.name: field
    for field in [
        RuleField("entity_type", FieldType.STRING, "What the version changes: topic or atom.", column="entity_type"),
        RuleField("title", FieldType.TEXT, "The proposed title.", column="title"),
        RuleField("content", FieldType.TEXT, "The proposed content.", column="content"),
        RuleField("content_length", FieldType.INTEGER, "Characters in the content.", expression=_content_length),
        RuleField("tags", FieldType.STRING_LIST, "The version's tags.", column="tags"),
        RuleField("author.username", FieldType.TEXT, "The author's username.", column="author__username"),
        RuleField("author.is_staff", FieldType.BOOLEAN, "Whether the author is staff.", column="author__is_staff"),
        RuleField(
            "author.trust_level",
            FieldType.INTEGER,
            "The trust level staff gave the author; 0 when none was given.",
            expression=_author_trust_level,
        ),
        RuleField(
            "author.account_age_days",
            FieldType.INTEGER,
            "Whole days since the author joined.",
            expression=_author_account_age_days,
        ),
        RuleField(
            "version_age_minutes",
            FieldType.INTEGER,
            "Whole minutes since the version was proposed.",
            expression=_version_age_minutes,
        ),
        RuleField(
            "entity_has_approved_versions",
            FieldType.BOOLEAN,
            "Whether an earlier version of the same topic or atom was approved.",
            expression=_entity_has_approved_versions,
        ),
    ]
}


# --- Validation -------------------------------------------------------------------------------------

_NODE_KEYS = ("all", "any", "not", "field", "op", "value")
_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "all": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
                "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
                "not": {"$ref": "#/$defs/node"},
                "field": {"type": "string"},
                "op": {"type": "string"},
                "value": {},  # typed by field and operator in _check_comparison
            },
            "additionalProperties": False,
            "minProperties": 1,
            "allOf": [
                {"if": {"required": ["all"]}, "then": {"maxProperties": 1}},
                {"if": {"required": ["any"]}, "then": {"maxProperties": 1}},
                {"if": {"required": ["not"]}, "then": {"maxProperties": 1}},
                {
                    "if": {"anyOf": [{"required": ["field"]}, {"required": ["op"]}, {"required": ["value"]}]},
                    "then": {"required": ["field", "op", "value"]},
                },
            ],
        }
    },
}
Draft202012Validator.check_schema(_SCHEMA)
_VALIDATOR = Draft202012Validator(_SCHEMA)
# Which of several errors at one place to report first: the most basic.
_KEYWORD_ORDER = ["type", "additionalProperties", "minProperties", "maxProperties", "required", "minItems"]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validate_conditions(conditions: object) -> None:
    """Raise RuleInvalid for the first problem of `conditions`, or return if it is a valid rule."""
    _check_size(conditions)
    errors = sorted(_VALIDATOR.iter_errors(conditions), key=_error_order)
    if errors:
        raise _schema_error(errors[0])
    for node, path in _walk(conditions, "conditions"):
        if "field" in node:
            _check_comparison(node, path)


def _check_size(conditions: object) -> None:
    """Depth and node limits, checked first and without recursion: any payload may arrive here."""
    count = 0
    stack: list[tuple[object, str, int]] = [(conditions, "conditions", 1)]
    while stack:
        node, path, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise RuleInvalid("conditions", f"a rule has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise RuleInvalid(path, f"nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict):
            continue
        children: list[tuple[object, str, int]] = []
        for key in ("all", "any"):
            if isinstance(node.get(key), list):
                # More than MAX_NODES children fail anyway; do not build paths for a million.
                children += [(child, f"{path}.{key}[{i}]", depth + 1) for i, child in enumerate(node[key][:MAX_NODES])]
        if "not" in node:
            children.append((node["not"], f"{path}.not", depth + 1))
        stack += reversed(children)


def _error_order(error: ValidationError) -> tuple:
    keyword = error.validator
    rank = _KEYWORD_ORDER.index(keyword) if keyword in _KEYWORD_ORDER else len(_KEYWORD_ORDER)
    # Document order: siblings share a container, so their keys compare as all str or all int.
    return (*((0, part) for part in error.absolute_path), (1, rank))


def _schema_error(error: ValidationError) -> RuleInvalid:
    path = _path(error.absolute_path)
    instance = error.instance
    match error.validator:
        case "type":
            expected = {
                "object": "an object: all, any, not or a comparison of field, op and value",
                "array": "a list of conditions",
                "string": "a string",
            }.get(error.validator_value, str(error.validator_value))
            return RuleInvalid(path, f"must be {expected}, not {_json_type(instance)}")
        case "additionalProperties":
            key = next(key for key in instance if key not in _NODE_KEYS)
            return RuleInvalid(
                _path([*error.absolute_path, key]),
                f"unknown key {key!r}; a node is all, any, not, or a comparison of field, op and value",
            )
        case "minProperties":
            return RuleInvalid(path, "empty node; expected all, any, not, or a comparison of field, op and value")
        case "maxProperties":
            return RuleInvalid(
                path,
                f"a node is exactly one of all, any, not, or a comparison of field, op and value; "
                f"found {', '.join(instance)}",
            )
        case "required":
            missing = next(key for key in error.validator_value if key not in instance)
            return RuleInvalid(_path([*error.absolute_path, missing]), "missing; a comparison has field, op and value")
        case "minItems":
            return RuleInvalid(path, "must hold at least one condition")
    return RuleInvalid(path, error.message)


def _path(parts) -> str:
    text = "conditions"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            text += f".{part}"
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text


def _walk(node: dict, path: str) -> Iterator[tuple[dict, str]]:
    """Every node of a schema-valid tree with its path, in document order."""
    yield node, path
    for key in ("all", "any"):
        for i, child in enumerate(node.get(key, ())):
            yield from _walk(child, f"{path}.{key}[{i}]")
    if "not" in node:
        yield from _walk(node["not"], f"{path}.not")


def _check_comparison(node: dict, path: str) -> None:
    name, op, value = node["field"], node["op"], node["value"]
    field = RULE_FIELDS.get(name)
    if field is None:
        raise RuleInvalid(f"{path}.field", f"unknown field {name!r}; known fields: {', '.join(RULE_FIELDS)}")
    allowed = OPERATORS[field.type]
    if op not in allowed:
        problem = (
            f"operator {op!r} does not apply to {field.type}" if op in ALL_OPERATORS else f"unknown operator {op!r}"
        )
        raise RuleInvalid(f"{path}.op", f"{problem}; allowed for {field.type}: {', '.join(allowed)}")
    value_path = f"{path}.value"
    if op == "in":
        if not isinstance(value, list):
            raise RuleInvalid(value_path, f"'in' takes a list, not {_json_type(value)}")
        if not value:
            raise RuleInvalid(value_path, "'in' takes a non-empty list")
        if len(value) > MAX_IN_VALUES:
            raise RuleInvalid(value_path, f"'in' takes at most {MAX_IN_VALUES} values")
        for i, item in enumerate(value):
            _check_scalar(field, item, f"{value_path}[{i}]")
    elif op in ("contains", "matches"):
        check_string(value, value_path)
        if op == "matches":
            _check_regex(value, value_path)
    else:
        _check_scalar(field, value, value_path)


def _check_scalar(field: RuleField, value: object, path: str) -> None:
    if field.type is FieldType.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RuleInvalid(path, f"expected an integer, not {_json_type(value)}")
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            raise RuleInvalid(path, f"out of range: integers lie between {MIN_INTEGER} and {MAX_INTEGER}")
    elif field.type is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise RuleInvalid(path, f"expected true or false, not {_json_type(value)}")
    else:
        check_string(value, path)
        if field.name == "entity_type" and value not in EntityType.values:
            raise RuleInvalid(path, f"unknown entity type {value!r}; one of: {', '.join(EntityType.values)}")


def check_string(value: object, path: str) -> None:
    if not isinstance(value, str):
        raise RuleInvalid(path, f"expected a string, not {_json_type(value)}")
    if len(value) > MAX_STRING_CHARS:
        raise RuleInvalid(path, f"at most {MAX_STRING_CHARS} characters")
    # PostgreSQL text holds neither; a parameter with either fails only when the query runs.
    if "\x00" in value:
        raise RuleInvalid(path, "must not contain the NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise RuleInvalid(path, "must be valid Unicode (no lone surrogates)") from None


def _check_regex(pattern: str, path: str) -> None:
    if len(pattern) > MAX_REGEX_CHARS:
        raise RuleInvalid(path, f"a regex has at most {MAX_REGEX_CHARS} characters")
    try:
        python_regex(pattern)
    except OutsideSubset as exc:
        raise RuleInvalid(path, f"regex outside the safe subset at position {exc.position}: {exc.reason}") from None
    except re.error as exc:
        raise RuleInvalid(path, f"regex does not compile: {exc.msg}") from None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


# --- SQL ----------------------------------------------------------------------------------------------


def _require_aware(as_of: datetime) -> None:
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be a timezone-aware datetime")


def annotate_rule_fields(queryset: QuerySet[Version], *, as_of: datetime) -> QuerySet[Version]:
    """Add every computed field as an annotation named rule_<field>, e.g. rule_version_age_minutes.

    The compiled Q does not depend on them (it inlines the same expressions), so this is for
    reading the values, e.g. to show why a rule matched.
    """
    _require_aware(as_of)
    return queryset.annotate(
        **{field.annotation: field.expression(as_of) for field in RULE_FIELDS.values() if field.expression}
    )


def compile_conditions(conditions: dict, *, as_of: datetime) -> Q:
    """The rule as a Q on Version; every value in it is a bound parameter. Validates first."""
    _require_aware(as_of)
    validate_conditions(conditions)
    return _compile(conditions, as_of)


def matching_versions(queryset: QuerySet[Version], conditions: dict, *, as_of: datetime) -> QuerySet[Version]:
    """The versions of `queryset` the rule matches at `as_of`."""
    return annotate_rule_fields(queryset, as_of=as_of).filter(compile_conditions(conditions, as_of=as_of))


def _compile(node: dict, as_of: datetime) -> Q:
    if "all" in node:
        return reduce(and_, (_compile(child, as_of) for child in node["all"]))
    if "any" in node:
        return reduce(or_, (_compile(child, as_of) for child in node["any"]))
    if "not" in node:
        return ~_compile(node["not"], as_of)
    field, op, value = RULE_FIELDS[node["field"]], node["op"], node["value"]
    if op == "ne":
        return ~_comparison(field, "exact", value, as_of)
    lookup = {"eq": "exact", "in": "in", "contains": "contains", "matches": "regex"}.get(op) or _ORDERING_LOOKUPS[op]
    if field.type is FieldType.STRING_LIST:
        value = [value]  # tags @> '["value"]', evaluated on the claimed batch (no index needed)
    return _comparison(field, lookup, value, as_of)


def _comparison(field: RuleField, lookup: str, value: object, as_of: datetime) -> Q:
    if field.column:
        # Django's lookups bind `value`; `contains` escapes % and _ for LIKE, `regex` is `~`.
        return Q(**{f"{field.column}__{lookup}": value})
    expression = field.expression(as_of)
    return Q(expression.output_field.get_lookup(lookup)(expression, value))


# --- The reference evaluator ------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionFacts:
    """Every rule field's value for one version at one moment (attribute: field name, '.' → '_')."""

    entity_type: str
    title: str
    content: str
    content_length: int
    tags: tuple[str, ...]
    author_username: str
    author_is_staff: bool
    author_trust_level: int
    author_account_age_days: int
    version_age_minutes: int
    entity_has_approved_versions: bool


def version_facts(version: Version, *, as_of: datetime) -> VersionFacts:
    """The facts of `version` as held in memory, its author and entity history read from the
    database (two queries, plus one for the author unless it was selected with the version)."""
    _require_aware(as_of)
    author = version.author
    trust_level = AuthorProfile.objects.filter(user_id=author.pk).values_list("trust_level", flat=True).first()
    has_approved = Version.objects.filter(
        entity_type=version.entity_type,
        entity_id=version.entity_id,
        status=Version.Status.APPROVED,
        created_at__lt=version.created_at,
    ).exists()
    tags = version.tags if isinstance(version.tags, list) else []
    return VersionFacts(
        entity_type=version.entity_type,
        title=version.title,
        content=version.content,
        content_length=len(version.content),
        # Only strings can equal a tag a rule names (jsonb @> compares element by element).
        tags=tuple(tag for tag in tags if isinstance(tag, str)),
        author_username=author.username,
        author_is_staff=author.is_staff,
        author_trust_level=trust_level or 0,
        # timedelta // timedelta floors exactly; total_seconds() would be a float.
        author_account_age_days=(as_of - author.date_joined) // _DAY,
        version_age_minutes=(as_of - version.created_at) // _MINUTE,
        entity_has_approved_versions=has_approved,
    )


def evaluate_conditions(conditions: dict, facts: VersionFacts) -> bool:
    """Whether the rule matches the version `facts` describe. `conditions` must be valid.

    Python's re backtracks: fine for the reference and single versions, but the SQL path is the
    one to run over many or large contents.
    """
    if "all" in conditions:
        return all(evaluate_conditions(child, facts) for child in conditions["all"])
    if "any" in conditions:
        return any(evaluate_conditions(child, facts) for child in conditions["any"])
    if "not" in conditions:
        return not evaluate_conditions(conditions["not"], facts)
    op, value = conditions["op"], conditions["value"]
    actual = getattr(facts, RULE_FIELDS[conditions["field"]].fact)
    match op:
        case "eq":
            return actual == value
        case "ne":
            return actual != value
        case "lt":
            return actual < value
        case "lte":
            return actual <= value
        case "gt":
            return actual > value
        case "gte":
            return actual >= value
        case "in":
            return actual in value
        case "contains":
            return value in actual  # a substring of text, an element of tags
        case "matches":
            return python_regex(value).search(actual) is not None
    raise ValueError(f"unknown operator {op!r}")


# --- Description ------------------------------------------------------------------------------------

_SYMBOLS = {"eq": "=", "ne": "!=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "in"}


def describe(conditions: object) -> str:
    """The rule in one line, e.g. 'content_length < 200 and author.trust_level >= 2' (≤ 500 chars)."""
    text = _describe(conditions, parent=None)
    return text if len(text) <= DESCRIBE_MAX_CHARS else text[: DESCRIBE_MAX_CHARS - 1] + "…"


def _describe(node: object, parent: str | None) -> str:
    if not isinstance(node, dict):
        return json.dumps(node, ensure_ascii=False)
    for connective in ("all", "any"):
        if isinstance(node.get(connective), list) and node[connective]:
            parts = [_describe(child, connective) for child in node[connective]]
            text = (" and " if connective == "all" else " or ").join(parts)
            return f"({text})" if len(parts) > 1 and parent not in (None, connective) else text
    if "not" in node:
        return f"not {_describe(node['not'], 'not')}"
    if {"field", "op", "value"} <= node.keys():
        value = json.dumps(node["value"], ensure_ascii=False)
        return f"{node['field']} {_SYMBOLS.get(node['op'], node['op'])} {value}"
    return json.dumps(node, ensure_ascii=False)
