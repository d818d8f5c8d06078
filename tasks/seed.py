"""Demo and scale data for tasks, generated inside PostgreSQL (INSERT … SELECT generate_series).

Idempotent: it tops the table up to the wanted count. Rows are made by one statement per batch
of BATCH_ROWS, so a million tasks never pass through Python.
"""

from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, transaction

from tasks.models import Project, Task

BATCH_ROWS = 100_000
DEMO_USERS = 20
DEMO_PROJECTS = 25
WORDS = [
    "invoice",
    "ledger",
    "refund",
    "customer",
    "onboarding",
    "migration",
    "report",
    "audit",
    "payment",
    "vendor",
    "contract",
    "review",
    "deploy",
    "incident",
    "backup",
    "renewal",
    "shipment",
    "forecast",
    "budget",
    "compliance",
    "training",
    "support",
    "escalation",
    "release",
]
TAGS = ["finance", "ops", "urgent", "customer", "internal", "q4", "legal", "infra"]


def _ensure_demo_people_and_projects() -> tuple[list[int], list[int]]:
    User = get_user_model()
    users = [
        User(username=f"demo{n:02d}", email=f"demo{n:02d}@example.com", password=make_password(None))
        for n in range(1, DEMO_USERS + 1)
    ]
    User.objects.bulk_create(users, ignore_conflicts=True)
    user_ids = list(User.objects.filter(username__startswith="demo").order_by("pk").values_list("pk", flat=True))
    projects = [
        Project(name=f"Demo project {n:02d}", owner_id=user_ids[n % len(user_ids)]) for n in range(1, DEMO_PROJECTS + 1)
    ]
    Project.objects.bulk_create(projects, ignore_conflicts=True)
    project_ids = list(
        Project.objects.filter(name__startswith="Demo project").order_by("pk").values_list("pk", flat=True)
    )
    return user_ids, project_ids


INSERT_BATCH_SQL = f"""
INSERT INTO {Task._meta.db_table}
    (project_id, title, description, assignee_id, status, priority, deadline, tags,
     created_at, updated_at, completed_at)
SELECT
    projects[1 + (n %% array_length(projects, 1))],
    initcap(words[1 + (n * 7) %% nw]) || ' ' || words[1 + (n * 13) %% nw] || ' #' || n,
    'Follow up the ' || words[1 + (n * 3) %% nw] || ' and ' || words[1 + (n * 11) %% nw]
        || ' for the ' || words[1 + (n * 5) %% nw] || ' team.',
    CASE WHEN n %% 10 = 0 THEN NULL ELSE users[1 + (n %% array_length(users, 1))] END,
    statuses[1 + (n %% cardinality(statuses))],
    priorities[1 + ((n / 7) %% cardinality(priorities))],
    CASE WHEN n %% 3 = 0 THEN NULL ELSE created + make_interval(days => (n %% 60) - 10) END,
    CASE n %% 4 WHEN 0 THEN '[]'::jsonb
               WHEN 1 THEN jsonb_build_array(tags[1 + n %% nt])
               ELSE jsonb_build_array(tags[1 + n %% nt], tags[1 + (n / 3) %% nt]) END,
    created,
    created,
    CASE WHEN statuses[1 + (n %% cardinality(statuses))] = 'done' THEN created + interval '1 day' END
FROM (
    SELECT n, now() - make_interval(secs => (%(target)s - n) * 3) AS created
    FROM generate_series(%(start)s, %(end)s - 1) AS n
) AS numbered,
LATERAL (SELECT %(users)s::bigint[] AS users, %(projects)s::bigint[] AS projects,
                %(words)s::text[] AS words, cardinality(%(words)s::text[]) AS nw,
                %(tags)s::text[] AS tags, cardinality(%(tags)s::text[]) AS nt,
                %(statuses)s::text[] AS statuses, %(priorities)s::text[] AS priorities) AS vocab
"""


def seed_tasks(target: int, progress: Callable[[int], None]) -> int:
    user_ids, project_ids = _ensure_demo_people_and_projects()
    existing = Task.objects.count()  # an offline command; the estimate would not be idempotent
    progress(min(existing, target))
    inserted = 0
    params = {
        "users": user_ids,
        "projects": project_ids,
        "words": WORDS,
        "tags": TAGS,
        "statuses": list(Task.Status.values),
        "priorities": list(Task.Priority.values),
    }
    for start in range(existing, target, BATCH_ROWS):
        end = min(start + BATCH_ROWS, target)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(INSERT_BATCH_SQL, {**params, "start": start, "end": end, "target": target})
        inserted += end - start
        progress(end - start)
    if inserted:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Task._meta.db_table}")
    return inserted
