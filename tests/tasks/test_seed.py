"""`seed_demo --tasks N` tops the task table up to N rows, generated inside PostgreSQL."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Q

from tasks import seed, selectors
from tasks.models import Project, Task

pytestmark = pytest.mark.django_db


def seed_demo(tasks: int) -> str:
    out = io.StringIO()
    call_command("seed_demo", "--tasks", str(tasks), verbosity=0, stdout=out)
    return out.getvalue()


def demo_users() -> int:
    return get_user_model().objects.filter(username__startswith="demo").count()


def demo_projects() -> int:
    return Project.objects.filter(name__startswith="Demo project").count()


def test_seed_creates_the_asked_number_of_tasks():
    output = seed_demo(30)

    assert Task.objects.count() == 30
    assert "tasks: 30 inserted, 30 wanted" in output


def test_seed_run_twice_keeps_the_same_rows():
    seed_demo(30)
    first_ids = set(Task.objects.values_list("pk", flat=True))

    output = seed_demo(30)

    assert set(Task.objects.values_list("pk", flat=True)) == first_ids
    assert "tasks: 0 inserted, 30 wanted" in output
    assert (demo_users(), demo_projects()) == (seed.DEMO_USERS, seed.DEMO_PROJECTS)


def test_seed_tops_up_to_a_larger_count_without_duplicating_people_or_projects():
    seed_demo(30)

    output = seed_demo(45)

    assert Task.objects.count() == 45
    assert "tasks: 15 inserted, 45 wanted" in output
    assert (demo_users(), demo_projects()) == (seed.DEMO_USERS, seed.DEMO_PROJECTS)
    # Row numbers continue where the first run stopped: each of 0..44 exactly once.
    assert sorted(int(title.rsplit("#", 1)[1]) for title in Task.objects.values_list("title", flat=True)) == list(
        range(45)
    )


def test_seed_in_several_batches_inserts_each_row_once(monkeypatch):
    monkeypatch.setattr(seed, "BATCH_ROWS", 7)

    seed_demo(30)

    assert sorted(int(title.rsplit("#", 1)[1]) for title in Task.objects.values_list("title", flat=True)) == list(
        range(30)
    )


def test_seeded_rows_are_valid_tasks():
    seed_demo(30)

    tasks = list(Task.objects.all())
    assert len(tasks) == 30
    assert {task.status for task in tasks} == set(Task.Status.values)  # 30 rows cycle through all six
    assert {task.priority for task in tasks} <= set(Task.Priority.values)
    assert all(task.created_at is not None and task.updated_at is not None for task in tasks)
    assert all(set(task.tags) <= set(seed.TAGS) for task in tasks)
    # completed_at is set exactly on done tasks, as the services keep it.
    assert all((task.completed_at is not None) == (task.status == Task.Status.DONE) for task in tasks)
    assert {task.project.name for task in Task.objects.select_related("project")} <= set(
        Project.objects.filter(name__startswith="Demo project").values_list("name", flat=True)
    )


@pytest.mark.parametrize("word", ["invoice", "ledger", "audit"])
def test_seeded_rows_are_found_by_full_text_search(word):
    seed_demo(30)

    found = set(selectors.task_search(Task.objects.all(), word).values_list("pk", flat=True))

    # The generated search_vector is filled for rows inserted by raw SQL too: full-text finds
    # exactly the rows whose title or description holds the word.
    containing = set(
        Task.objects.filter(Q(title__icontains=word) | Q(description__icontains=word)).values_list("pk", flat=True)
    )
    assert containing  # the vocabulary cycles, so 30 rows use every word
    assert found == containing


def test_seed_refuses_a_negative_count():
    with pytest.raises(SystemExit) as exit_info:
        call_command("seed_demo", "--tasks", "-1", verbosity=0, stdout=io.StringIO(), stderr=io.StringIO())

    assert exit_info.value.code == 2
    assert Task.objects.count() == 0
