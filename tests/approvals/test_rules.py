"""The rule language: validation paths, bound parameters, and SQL agreeing exactly with the reference."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals.models import AuthorProfile, Version
from approvals.rules import (
    MAX_STRING_CHARS,
    OPERATORS,
    RULE_FIELDS,
    FieldType,
    RuleInvalid,
    annotate_rule_fields,
    compile_conditions,
    describe,
    evaluate_conditions,
    matching_versions,
    validate_conditions,
    version_facts,
)
from tests.factories import UserFactory

# Microseconds on purpose: ages must floor them away identically in SQL and Python.
AS_OF = datetime(2025, 6, 15, 12, 0, 0, 250_000, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

SHORT_TITLE = {"field": "title", "op": "eq", "value": "x"}


def small_edit(value=200):
    return {"field": "content_length", "op": "lt", "value": value}


# --- Validation -------------------------------------------------------------------------------------


def nested_nots(levels: int) -> dict:
    node = SHORT_TITLE
    for _ in range(levels):
        node = {"not": node}
    return node


INVALID_RULES = [
    # (conditions, path of the problem)
    ([SHORT_TITLE], "conditions"),
    ("title = x", "conditions"),
    (None, "conditions"),
    ({}, "conditions"),
    ({"all": []}, "conditions.all"),
    ({"any": []}, "conditions.any"),
    ({"all": "not a list"}, "conditions.all"),
    ({"all": [SHORT_TITLE, "title = x"]}, "conditions.all[1]"),
    ({"not": [SHORT_TITLE]}, "conditions.not"),
    ({"not": {}}, "conditions.not"),
    ({"all": [SHORT_TITLE], "note": "why"}, "conditions.note"),
    ({"all": [SHORT_TITLE], "a b": 1}, 'conditions["a b"]'),
    ({"any": [{**SHORT_TITLE, "negate": True}]}, "conditions.any[0].negate"),
    ({"all": [SHORT_TITLE], "any": [SHORT_TITLE]}, "conditions"),
    ({"not": SHORT_TITLE, "field": "title", "op": "eq", "value": "x"}, "conditions"),
    ({"all": [SHORT_TITLE, {"field": "title", "op": "eq"}]}, "conditions.all[1].value"),
    ({"op": "eq", "value": "x"}, "conditions.field"),
    ({"field": 1, "op": "eq", "value": "x"}, "conditions.field"),
    ({"field": "author.email", "op": "eq", "value": "x"}, "conditions.field"),
    ({"field": "title", "op": ["eq"], "value": "x"}, "conditions.op"),
    ({"all": [SHORT_TITLE, {"field": "content_length", "op": "foo", "value": 1}]}, "conditions.all[1].op"),
    ({"field": "title", "op": "lt", "value": "m"}, "conditions.op"),  # no string ordering
    ({"field": "content_length", "op": "contains", "value": "1"}, "conditions.op"),
    ({"field": "entity_type", "op": "matches", "value": "top"}, "conditions.op"),  # string, not text
    ({"field": "author.is_staff", "op": "in", "value": [True]}, "conditions.op"),
    ({"field": "tags", "op": "eq", "value": ["typo"]}, "conditions.op"),
    ({"field": "content_length", "op": "gt", "value": True}, "conditions.value"),
    ({"field": "content_length", "op": "eq", "value": 1.0}, "conditions.value"),
    ({"field": "content_length", "op": "eq", "value": "200"}, "conditions.value"),
    ({"field": "content_length", "op": "lt", "value": 2**63}, "conditions.value"),
    ({"field": "author.is_staff", "op": "eq", "value": 1}, "conditions.value"),
    ({"field": "author.is_staff", "op": "eq", "value": "true"}, "conditions.value"),
    ({"field": "title", "op": "eq", "value": 5}, "conditions.value"),
    ({"field": "title", "op": "eq", "value": None}, "conditions.value"),
    ({"field": "title", "op": "contains", "value": "nul\x00"}, "conditions.value"),
    ({"field": "title", "op": "contains", "value": "\ud800"}, "conditions.value"),
    ({"field": "entity_type", "op": "eq", "value": "topics"}, "conditions.value"),
    ({"field": "tags", "op": "contains", "value": ["typo"]}, "conditions.value"),
    ({"field": "title", "op": "in", "value": []}, "conditions.value"),
    ({"field": "title", "op": "in", "value": "x"}, "conditions.value"),
    ({"field": "title", "op": "in", "value": [str(n) for n in range(101)]}, "conditions.value"),
    ({"field": "content_length", "op": "in", "value": [1, True]}, "conditions.value[1]"),
    ({"field": "entity_type", "op": "in", "value": ["topic", "page"]}, "conditions.value[1]"),
    ({"field": "content", "op": "matches", "value": 5}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "x" * 201}, "conditions.value"),
    # Regexes that do not parse.
    ({"field": "content", "op": "matches", "value": "(typo"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "typo)"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "a**"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "*a"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "[z-a]"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "[abc"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "trailing\\"}, "conditions.value"),
    # Regexes PostgreSQL and Python would read differently (or one of them not at all).
    ({"field": "content", "op": "matches", "value": r"\d+"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": r"\w"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": r"\btypo"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "(?i)typo"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "o{2}"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "a*+b"}, "conditions.value"),  # possessive in Python 3.11
    ({"field": "content", "op": "matches", "value": "[[:alpha:]]"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "[a-c-e]"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "[a||b]"}, "conditions.value"),  # a future set union
    ({"field": "content", "op": "matches", "value": "https://"}, "conditions.value"),
    ({"field": "content", "op": "matches", "value": "(a+)+b"}, "conditions.value"),  # exponential in Python
    ({"field": "content", "op": "matches", "value": "(a|ab)*c"}, "conditions.value"),
    (
        {"all": [SHORT_TITLE, {"not": {"field": "title", "op": "matches", "value": "x]"}}]},
        "conditions.all[1].not.value",
    ),
    # Size limits.
    (nested_nots(10), "conditions" + ".not" * 10),
    ({"all": [SHORT_TITLE] * 100}, "conditions"),
]


@pytest.mark.parametrize(("conditions", "path"), INVALID_RULES)
def test_an_invalid_rule_is_rejected_with_the_path_of_its_problem(conditions, path):
    with pytest.raises(RuleInvalid) as raised:
        validate_conditions(conditions)
    assert raised.value.path == path
    assert raised.value.message
    assert str(raised.value) == f"{path}: {raised.value.message}"


def test_an_unknown_operator_is_explained_with_the_operators_of_the_field_type():
    with pytest.raises(RuleInvalid) as raised:
        validate_conditions({"all": [SHORT_TITLE, {"field": "content_length", "op": "foo", "value": 1}]})
    assert raised.value.path == "conditions.all[1].op"
    assert raised.value.message == "unknown operator 'foo'; allowed for integer: eq, ne, lt, lte, gt, gte, in"


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"any": [{**SHORT_TITLE, "negate": True}]}, "conditions.any[0].negate: unknown key 'negate'; "),
        (
            {"field": "content_length", "op": "gt", "value": True},
            "conditions.value: expected an integer, not a boolean",
        ),
        ({"all": []}, "conditions.all: must hold at least one condition"),
        (
            {"field": "content", "op": "matches", "value": r"\d"},
            r"conditions.value: regex outside the safe subset at position 0: "
            r"'\d': a backslash may only escape punctuation",
        ),
    ],
)
def test_messages_quoted_in_the_docs_are_the_real_ones(conditions, expected):
    with pytest.raises(RuleInvalid) as raised:
        validate_conditions(conditions)
    assert str(raised.value).startswith(expected)


def test_the_first_problem_in_document_order_is_reported():
    bad_op = {"field": "title", "op": "lt", "value": "x"}
    with pytest.raises(RuleInvalid) as raised:
        validate_conditions({"any": [SHORT_TITLE, {"field": "title"}, bad_op]})
    assert raised.value.path == "conditions.any[1].op"


# The worked examples of docs/approvals-rules.md.
DOCS_SMALL_EDITS_BY_TRUSTED_AUTHORS = {
    "all": [
        small_edit(),
        {"field": "author.trust_level", "op": "gte", "value": 2},
        {"field": "version_age_minutes", "op": "gte", "value": 10},
    ]
}
DOCS_LINKS_FROM_NEW_ACCOUNTS = {
    "all": [
        {"field": "author.account_age_days", "op": "lt", "value": 7},
        {"field": "author.is_staff", "op": "eq", "value": False},
        {
            "any": [
                {"field": "content", "op": "matches", "value": r"https?\:\/\/"},
                {"field": "content", "op": "contains", "value": "www."},
            ]
        },
    ]
}
DOCS_TYPO_FIXES = {
    "all": [
        {"field": "entity_has_approved_versions", "op": "eq", "value": True},
        {
            "any": [
                {"field": "tags", "op": "contains", "value": "typo"},
                {"field": "title", "op": "matches", "value": "(^|[^a-z])[Tt]ypos?([^a-z]|$)"},
            ]
        },
        {"not": {"field": "content", "op": "matches", "value": r"https?\:\/\/"}},
    ]
}

VALID_RULES = [
    DOCS_SMALL_EDITS_BY_TRUSTED_AUTHORS,
    DOCS_LINKS_FROM_NEW_ACCOUNTS,
    DOCS_TYPO_FIXES,
    small_edit(),
    {"all": [small_edit(), {"field": "author.trust_level", "op": "gte", "value": 2}]},
    {
        "any": [
            {"field": "tags", "op": "contains", "value": "typo"},
            {"not": {"field": "author.is_staff", "op": "eq", "value": False}},
        ]
    },
    {"field": "entity_type", "op": "in", "value": ["topic", "atom"]},
    {"field": "content_length", "op": "in", "value": [0, -1, 2**63 - 1, -(2**63)]},
    {"field": "title", "op": "ne", "value": ""},
    {"field": "content", "op": "matches", "value": r"^(Fix|fix) typo[s]?$"},
    {"field": "content", "op": "matches", "value": r"https?\:\/\/[^ ]+\.example"},
    {"field": "content", "op": "matches", "value": r"[-a-z0-9_.]+\@ex\.com[-]|\(c\)|[\]\[]|[a^$|]"},
    {"field": "author.username", "op": "matches", "value": "^zoë.*?$"},
    {"field": "content", "op": "matches", "value": "(ab)+(cd|ef)x?"},
    {"field": "entity_has_approved_versions", "op": "ne", "value": True},
    {"field": "version_age_minutes", "op": "gte", "value": 10},
    nested_nots(9),  # depth 10
    {"all": [SHORT_TITLE] * 99},  # 100 nodes
]


@pytest.mark.parametrize("conditions", VALID_RULES)
def test_a_valid_rule_passes_validation(conditions):
    validate_conditions(conditions)


def test_every_field_type_has_operators_and_every_field_a_description():
    assert set(OPERATORS) == set(FieldType)
    assert all(field.description for field in RULE_FIELDS.values())
    assert {field.name for field in RULE_FIELDS.values()} == set(RULE_FIELDS)


def test_compile_refuses_an_invalid_rule_and_a_naive_moment():
    with pytest.raises(RuleInvalid):
        compile_conditions({"field": "title", "op": "lt", "value": "x"}, as_of=AS_OF)
    with pytest.raises(ValueError, match="timezone-aware"):
        compile_conditions(SHORT_TITLE, as_of=AS_OF.replace(tzinfo=None))


# --- Description ------------------------------------------------------------------------------------


def test_describe_reads_like_the_rule():
    rule = {"all": [small_edit(), {"field": "author.trust_level", "op": "gte", "value": 2}]}
    assert describe(rule) == "content_length < 200 and author.trust_level >= 2"
    assert describe(DOCS_SMALL_EDITS_BY_TRUSTED_AUTHORS) == (
        "content_length < 200 and author.trust_level >= 2 and version_age_minutes >= 10"
    )
    nested = {
        "any": [
            {"all": [{"field": "tags", "op": "contains", "value": "typo"}, SHORT_TITLE]},
            {"not": {"any": [{"field": "author.is_staff", "op": "eq", "value": True}, small_edit(5)]}},
            {"field": "entity_type", "op": "in", "value": ["topic"]},
        ]
    }
    assert describe(nested) == (
        '(tags contains "typo" and title = "x") or not (author.is_staff = true or content_length < 5)'
        ' or entity_type in ["topic"]'
    )


def test_describe_is_cut_to_fit_the_decision_reason():
    text = describe({"any": [{"field": "content", "op": "contains", "value": "w" * 900}]})
    assert len(text) == 500
    assert text.endswith("…")


# --- SQL ----------------------------------------------------------------------------------------------

HOSTILE = "'; DROP TABLE approvals_version; --"


@pytest.mark.django_db
@pytest.mark.parametrize("op", ["eq", "contains", "in"])
def test_user_text_reaches_sql_only_as_a_bound_parameter(op):
    author = UserFactory()
    hostile = Version.objects.create(entity_type="topic", entity_id=1, title=HOSTILE, content=HOSTILE, author=author)
    Version.objects.create(entity_type="topic", entity_id=1, title="benign", content="benign", author=author)
    rule = {"field": "title", "op": op, "value": [HOSTILE] if op == "in" else HOSTILE}

    queryset = matching_versions(Version.objects.all(), rule, as_of=AS_OF)
    sql, params = queryset.query.sql_with_params()

    assert "DROP TABLE" not in sql
    # Whole, or LIKE-escaped ('_' → '\\_') inside %…% for contains.
    assert any(HOSTILE in str(param).replace("\\_", "_") for param in params)
    assert [version.pk for version in queryset] == [hostile.pk]
    assert Version._meta.db_table in connection.introspection.table_names()
    assert Version.objects.count() == 2


@pytest.mark.django_db
def test_matching_versions_is_one_query_and_carries_the_computed_values(django_assert_num_queries):
    author = UserFactory()
    version = Version.objects.create(entity_type="atom", entity_id=7, title="t", content="ünï", author=author)
    Version.objects.filter(pk=version.pk).update(created_at=AS_OF - timedelta(minutes=10))
    rule = {"all": [small_edit(), {"field": "version_age_minutes", "op": "eq", "value": 10}]}

    with django_assert_num_queries(1):
        (matched,) = matching_versions(Version.objects.all(), rule, as_of=AS_OF)

    assert matched.rule_content_length == 3
    assert matched.rule_version_age_minutes == 10
    assert matched.rule_author_trust_level == 0
    assert matched.rule_entity_has_approved_versions is False


@pytest.mark.django_db
def test_dollar_and_dot_mean_the_same_in_postgresql_and_python():
    # Python's `$` also matches before a final newline and its `.` skips newlines; PostgreSQL's
    # do neither. The rules translate, so both engines agree.
    version = Version.objects.create(
        entity_type="topic", entity_id=1, title="t", content="line one\nFix typo\n", author=UserFactory()
    )
    facts = version_facts(version, as_of=AS_OF)
    for pattern, expected in [("typo$", False), ("typo.$", True), ("one.Fix", True), ("^Fix", False), ("^line", True)]:
        rule = {"field": "content", "op": "matches", "value": pattern}
        assert matching_versions(Version.objects.all(), rule, as_of=AS_OF).exists() is expected, pattern
        assert evaluate_conditions(rule, facts) is expected, pattern


# --- SQL equals the reference -----------------------------------------------------------------------

AUTHORS = [
    # (username, is_staff, trust level or None for no AuthorProfile, date_joined)
    ("alice", True, 3, AS_OF - timedelta(days=400)),
    ("bob", False, None, AS_OF - timedelta(days=1)),  # exactly one day
    ("carol", False, 0, AS_OF - timedelta(days=1) + MICROSECOND),  # a microsecond short of one day
    ("dave", False, 1, AS_OF - timedelta(days=30) - MICROSECOND),
    ("eve", True, None, AS_OF - timedelta(days=7)),
    ("frank_2", False, 2, AS_OF - timedelta(days=7) + MICROSECOND),
    ("zoë", False, 4, AS_OF + timedelta(hours=1)),  # joins after as_of: -1 days
    ("Élodie", False, 2, datetime(2001, 1, 1, tzinfo=UTC)),
    ("mod.team", True, 5, AS_OF),
    ("O'Brien", False, None, AS_OF - timedelta(days=2) + timedelta(seconds=1)),
    ("Typo", False, 1, AS_OF - timedelta(days=1) - MICROSECOND),
]

TITLES = [
    "Fix typo",
    "fix typo",
    "Typo fix in intro",
    "Pricing update",
    "",
    "Ünïcödé title ✓",
    "100% sure_thing",
    "Ends with newline\n",
    "Spam spam SPAM",
    "C:\\path\\to",
    "Release notes 2.0",
    "a",
]
CONTENTS = [
    "",
    "x",
    "a" * 199,
    "b" * 200,
    "c" * 201,
    "Fix typo\n",
    "line one\nline two",
    "Visit http://spam.example now",
    "Visit https://link.example/a_b?c=1",
    "ÄÖÜ äöü ß — 日本語 ✓",
    "100% off_sale",
    "under_score and 50%",
    "tab\tseparated",
    "emoji 😀 here",
    "typo",
    "Typo",
    "teh the",
    "lorem ipsum dolor " * 300,
    "back\\slash",
    "[brackets] (parens) {braces}",
    "ends with dollar$",
    "Fix typo\r\n",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
]
TAGS = [
    [],
    ["typo"],
    ["Typo"],
    ["spam", "link"],
    ["link"],
    ["typo", "minor"],
    ["ü"],
    [1, "typo"],
    ["a b"],
    ["typo", "typo"],
    {"typo": "not a list"},
    "typo",
    [["typo"]],
]
# How long before AS_OF a version was created: whole minutes and a microsecond either side.
CREATED_BEFORE = [
    timedelta(0),
    MICROSECOND,
    timedelta(seconds=59, microseconds=999_999),
    timedelta(minutes=1),
    timedelta(minutes=1) + MICROSECOND,
    timedelta(minutes=10),
    timedelta(minutes=10) - MICROSECOND,
    timedelta(minutes=10) + MICROSECOND,
    timedelta(hours=1),
    timedelta(days=1),
    timedelta(days=30) + MICROSECOND,
    timedelta(seconds=-30),  # after as_of: -1 minutes
    timedelta(minutes=-1),
    timedelta(minutes=-1) - MICROSECOND,
    timedelta(days=365 * 3, microseconds=7),
]
STATUSES = ["pending", "pending", "approved", "rejected", "reverted"]


def build_dataset() -> list[int]:
    """~60 versions over every field's edge cases; returns their ids."""
    users = []
    for username, is_staff, trust_level, _ in AUTHORS:
        user = UserFactory(username=username, is_staff=is_staff)
        if trust_level is not None:
            AuthorProfile.objects.create(user=user, trust_level=trust_level)
        users.append(user)
    for user, (*_, joined) in zip(users, AUTHORS, strict=True):
        type(user).objects.filter(pk=user.pk).update(date_joined=joined)

    rows = []  # (entity_type, entity_id, status, created before AS_OF, title, content, tags, author)
    # Entity histories: earlier approvals count, same-moment, later, rejected, reverted or another
    # entity type's approvals do not.
    for status, before in [("approved", 500), ("pending", 120), ("pending", 500), ("rejected", 600), ("pending", 700)]:
        rows.append(("topic", 1, status, timedelta(minutes=before)))
    for status, before in [("pending", 300), ("reverted", 400), ("pending", 450)]:
        rows.append(("atom", 1, status, timedelta(minutes=before)))
    for status, before in [("approved", 50), ("approved", 40), ("pending", 45), ("pending", 55)]:
        rows.append(("topic", 2, status, timedelta(minutes=before)))
    for i in range(48):
        entity = ("topic", 3 + i % 4) if i % 2 else ("atom", 2 + i % 3)
        rows.append((*entity, STATUSES[i % len(STATUSES)], CREATED_BEFORE[(i * 7) % len(CREATED_BEFORE)]))

    versions = [
        Version(
            entity_type=entity_type,
            entity_id=entity_id,
            status=status,
            approved=status == "approved",
            title=TITLES[(i * 5) % len(TITLES)],
            content=CONTENTS[(i * 7) % len(CONTENTS)],
            tags=TAGS[(i * 3) % len(TAGS)],
            author=users[(i * 4) % len(users)],
        )
        for i, (entity_type, entity_id, status, _) in enumerate(rows)
    ]
    Version.objects.bulk_create(versions)
    for version, (*_, before) in zip(versions, rows, strict=True):
        version.created_at = AS_OF - before
    Version.objects.bulk_update(versions, ["created_at"])  # auto_now_add set them on insert
    return [version.pk for version in versions]


def dataset_facts(ids: list[int]) -> dict:
    return {
        version.pk: version_facts(version, as_of=AS_OF)
        for version in Version.objects.select_related("author").filter(pk__in=ids)
    }


def _regex_literal(text: str) -> str:
    """`text` in the regex subset: punctuation escaped, what the subset cannot spell as `.`."""
    return "".join(
        char if char.isalnum() or char in " _-" else "\\" + char if char.isascii() and char.isprintable() else "."
        for char in text
    )


def pick(values: list) -> st.SearchStrategy:
    """sampled_from(values), by index: a strategy's repr must not hold a 5 kB content."""
    return st.integers(0, len(values) - 1).map(values.__getitem__)


def rule_strategy(facts: list) -> st.SearchStrategy:
    texts = {
        name: sorted({getattr(f, field.fact) for f in facts})
        for name, field in RULE_FIELDS.items()
        if field.type is FieldType.TEXT
    }
    all_text = [t for name in ("title", "content", "author.username") for t in texts[name] if t]
    # Substrings of real values, so contains/matches hit; a few strings LIKE or regexes treat specially.
    substring = pick(all_text).flatmap(
        lambda text: st.tuples(st.integers(0, len(text)), st.integers(0, len(text))).map(
            lambda ends: text[min(ends) : min(max(ends), min(ends) + 12)]
        )
    )
    odd_text = st.sampled_from(["%", "_", "\\", "typo", "TYPO", "$", "\n", "ü", "ß", "missing"])

    def text_values(name):
        return st.one_of(pick([text for text in texts[name] if len(text) <= MAX_STRING_CHARS]), substring, odd_text)

    word = substring.filter(bool).map(_regex_literal)
    atom = st.one_of(
        word,
        word,
        st.sampled_from([".", "[a-z]", "[A-Z]", "[0-9]", "[^ ]", "[^a-z]", "[-ü_]", r"\%", r"\\", r"\.", r"\$", "[$]"]),
        # Words that end a line: where `$` and `.` would differ between the engines.
        st.sampled_from(["typo", "Typo", "newline", "two", "o", "e"]),
    )
    quantifier = st.sampled_from(["", "", "", "*", "+", "?", "*?", "+?", "??"])
    piece = st.tuples(atom, quantifier).map("".join)
    plain = st.lists(atom, min_size=1, max_size=3).map("".join)
    repeated_group = st.tuples(plain, st.sampled_from(["*", "+", "?", "+?"])).map(lambda p: f"({p[0]}){p[1]}")
    sequence = st.lists(piece, min_size=1, max_size=3).map("".join)
    alternation = st.lists(sequence, min_size=2, max_size=3).map(lambda alts: f"({'|'.join(alts)})")
    body = st.lists(st.one_of(piece, piece, repeated_group, alternation), min_size=1, max_size=3).map("".join)
    built = st.tuples(st.sampled_from(["", "", "^"]), body, st.sampled_from(["", "$"])).map("".join)
    built = st.one_of(built, st.lists(built, min_size=2, max_size=2).map("|".join))
    # Straight from the data: a value's start or end anchored (a final newline is where `$`
    # differs), or a whole short value (its newlines become `.`, where `.` differs).
    ends = pick([text.rstrip("\n") for text in all_text if text.rstrip("\n")]).flatmap(
        lambda text: st.integers(1, 8).map(lambda k: _regex_literal(text[-k:]) + "$")
    )
    starts = pick(all_text).flatmap(lambda text: st.integers(1, 8).map(lambda k: "^" + _regex_literal(text[:k])))
    whole = pick([text for text in all_text if len(text) <= 40]).map(_regex_literal)
    regex = st.one_of(built, ends, starts, whole).filter(lambda pattern: len(pattern) <= 200)

    def integer_values(name):
        present = {getattr(f, RULE_FIELDS[name].fact) for f in facts}
        near = sorted({n + delta for n in present for delta in (-1, 0, 1)})
        return st.one_of(st.sampled_from(near), st.sampled_from(near), st.sampled_from([0, 2**63 - 1, -(2**63)]))

    by_field = {}
    for name, field in RULE_FIELDS.items():
        if field.type is FieldType.INTEGER:
            values = integer_values(name)
        elif field.type is FieldType.BOOLEAN:
            values = st.booleans()
        elif field.type is FieldType.STRING:
            values = st.sampled_from(["topic", "atom"])
        elif field.type is FieldType.TEXT:
            values = text_values(name)
        else:
            values = st.sampled_from(["typo", "Typo", "spam", "link", "minor", "ü", "a b", "1", "missing"])
        by_field[name] = {
            op: st.lists(values, min_size=1, max_size=4) if op == "in" else regex if op == "matches" else values
            for op in OPERATORS[field.type]
        }
    # Field, then operator, then value: each chosen uniformly, so every pair is exercised.
    comparison = st.sampled_from(sorted(by_field)).flatmap(
        lambda name: st.sampled_from(sorted(by_field[name])).flatmap(
            lambda op: by_field[name][op].map(lambda value: {"field": name, "op": op, "value": value})
        )
    )

    return st.recursive(
        comparison,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=4).map(lambda nodes: {"all": nodes}),
            st.lists(children, min_size=1, max_size=4).map(lambda nodes: {"any": nodes}),
            children.map(lambda node: {"not": node}),
        ),
        max_leaves=10,
    ).filter(lambda rule: depth(rule) <= 10)


def comparisons_of(node: dict):
    if "field" in node:
        yield node
    for child in node.get("all") or node.get("any") or ([node["not"]] if "not" in node else []):
        yield from comparisons_of(child)


def depth(node: dict) -> int:
    children = node.get("all") or node.get("any") or ([node["not"]] if "not" in node else [])
    return 1 + max((depth(child) for child in children), default=0)


@pytest.mark.django_db
def test_computed_values_in_sql_equal_the_reference_facts():
    ids = build_dataset()
    facts = dataset_facts(ids)
    computed = [field for field in RULE_FIELDS.values() if field.annotation]
    rows = annotate_rule_fields(Version.objects.filter(pk__in=ids), as_of=AS_OF).values(
        "pk", *(field.annotation for field in computed)
    )
    for row in rows:
        for field in computed:
            assert row[field.annotation] == getattr(facts[row["pk"]], field.fact), (row["pk"], field.name)
    # The boundaries really are in the data.
    assert {-2, -1, 0, 9, 10} <= {f.version_age_minutes for f in facts.values()}
    assert {-1, 0, 1, 6, 7, 30} <= {f.author_account_age_days for f in facts.values()}
    assert {True, False} == {f.entity_has_approved_versions for f in facts.values()}


@pytest.mark.django_db
def test_sql_matches_exactly_the_versions_the_reference_evaluator_matches():
    ids = build_dataset()
    facts = dataset_facts(ids)
    assert len(facts) == len(ids) >= 60
    dataset = Version.objects.filter(pk__in=ids)
    matched_counts = []

    @settings(
        max_examples=200,
        deadline=None,
        database=None,  # no example database written into the checkout
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(rule_strategy(list(facts.values())))
    def check(rule):
        validate_conditions(rule)
        expected = {pk for pk, version in facts.items() if evaluate_conditions(rule, version)}
        with transaction.atomic():  # a failing query must not poison the following examples
            matched = set(matching_versions(dataset, rule, as_of=AS_OF).values_list("pk", flat=True))
        assert matched == expected, describe(rule)
        matched_counts.append(len(matched))
        # Each comparison on its own too, one column each: a difference in one comparison can
        # hide inside all/any/not.
        leaves = list(comparisons_of(rule))
        columns = {
            f"leaf{i}": ExpressionWrapper(compile_conditions(leaf, as_of=AS_OF), BooleanField())
            for i, leaf in enumerate(leaves)
        }
        with transaction.atomic():
            rows = list(dataset.annotate(**columns).values("pk", *columns))
        for row in rows:
            for i, leaf in enumerate(leaves):
                assert row[f"leaf{i}"] is evaluate_conditions(leaf, facts[row["pk"]]), (describe(leaf), row["pk"])

    check()
    # Not vacuous: some rules matched nothing, others part of the dataset.
    assert 0 in matched_counts
    assert any(0 < count < len(ids) for count in matched_counts)


def test_the_regex_literal_helper_stays_in_the_subset():
    text = "a.b-c_d e%f\\g😀\n✓"
    literal = _regex_literal(text)
    validate_conditions({"field": "content", "op": "matches", "value": literal})
    assert re.fullmatch(literal, text, re.DOTALL)
