"""Scale data for approvals: pending versions generated inside PostgreSQL, idempotent top-up."""

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction

from approvals.models import ApprovalRule, Atom, AuthorProfile, Topic, Version

BATCH_ROWS = 100_000
AUTHORS = 50
ENTITIES = 1_000  # topics and atoms each
WORDS = ["policy", "update", "draft", "typo", "release", "pricing", "faq", "guide", "spam", "link"]


def _ensure_authors_and_entities() -> tuple[list[int], list[int], list[int]]:
    User = get_user_model()
    User.objects.bulk_create(
        [
            User(
                username=f"author{n:03d}",
                email=f"author{n:03d}@example.com",
                password=make_password(None),
                is_staff=n % 10 == 0,
            )
            for n in range(1, AUTHORS + 1)
        ],
        ignore_conflicts=True,
    )
    author_ids = list(User.objects.filter(username__startswith="author").order_by("pk").values_list("pk", flat=True))
    AuthorProfile.objects.bulk_create(
        [AuthorProfile(user_id=pk, trust_level=index % 5) for index, pk in enumerate(author_ids)],
        ignore_conflicts=True,
    )
    for model in (Topic, Atom):
        missing = ENTITIES - model.objects.count()
        if missing > 0:
            model.objects.bulk_create(
                [
                    model(title=f"{model.__name__} {n}", body="", author_id=author_ids[n % len(author_ids)])
                    for n in range(missing)
                ]
            )
    topic_ids = list(Topic.objects.order_by("pk").values_list("pk", flat=True)[:ENTITIES])
    atom_ids = list(Atom.objects.order_by("pk").values_list("pk", flat=True)[:ENTITIES])
    return author_ids, topic_ids, atom_ids


INSERT_BATCH_SQL = f"""
INSERT INTO {Version._meta.db_table}
    (entity_type, entity_id, title, content, tags, author_id, status, approved, decision_reason, created_at)
SELECT
    CASE WHEN n %% 2 = 0 THEN 'topic' ELSE 'atom' END,
    CASE WHEN n %% 2 = 0 THEN topics[1 + n %% cardinality(topics)] ELSE atoms[1 + n %% cardinality(atoms)] END,
    initcap(words[1 + n %% nw]) || ' ' || n,
    repeat(words[1 + (n / 3) %% nw] || ' ', 1 + n %% 40),
    CASE n %% 3 WHEN 0 THEN '[]'::jsonb ELSE jsonb_build_array(words[1 + (n / 7) %% nw]) END,
    authors[1 + n %% cardinality(authors)],
    'pending', false, '',
    now() - make_interval(secs => (%(target)s - n) * 0.5)
FROM generate_series(%(start)s, %(end)s - 1) AS n,
LATERAL (SELECT %(authors)s::bigint[] AS authors, %(topics)s::bigint[] AS topics, %(atoms)s::bigint[] AS atoms,
                %(words)s::text[] AS words, cardinality(%(words)s::text[]) AS nw) AS vocab
"""


# An example for the rule editor, inactive so the demo backlog waits for staff (or activation).
EXAMPLE_RULE = {
    "name": "Example: small edits by trusted authors",
    "action": "approve",
    "conditions": {
        "all": [
            {"field": "author.trust_level", "op": "gte", "value": 2},
            {"field": "content_length", "op": "lt", "value": 200},
            {"not": {"field": "content", "op": "matches", "value": "https?\\:"}},
        ]
    },
}


def seed_versions(target: int, progress: Callable[[int], None]) -> int:
    """Top the number of versions up to `target`; new ones are pending."""
    ApprovalRule.objects.get_or_create(
        name=EXAMPLE_RULE["name"],
        defaults={"action": EXAMPLE_RULE["action"], "conditions": EXAMPLE_RULE["conditions"], "is_active": False},
    )
    author_ids, topic_ids, atom_ids = _ensure_authors_and_entities()
    existing = Version.objects.count()
    progress(min(existing, target))
    params = {"authors": author_ids, "topics": topic_ids, "atoms": atom_ids, "words": WORDS, "target": target}
    for start in range(existing, target, BATCH_ROWS):
        end = min(start + BATCH_ROWS, target)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(INSERT_BATCH_SQL, {**params, "start": start, "end": end})
        progress(end - start)
    if target > existing:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Version._meta.db_table}")
    return max(0, target - existing)
