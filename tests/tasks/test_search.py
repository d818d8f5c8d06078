"""Ranked full-text search: bounded candidates, relevance within them, a cursor.

At 1M tasks a common word matches 100,000+ rows; ranking all of them before the page was cut cost
seconds (bench/search.py measures old and new side by side). These tests pin the properties that
keep it in milliseconds: candidates come from a bounded walk over the newest tasks or from the GIN
index, cut by a Limit below the ranking sort, whatever the words.
"""

import json

import pytest
from django.db import connection
from django.test import override_settings

from tasks import selectors
from tasks.models import Task
from tests.factories import ProjectFactory, TaskFactory

pytestmark = pytest.mark.django_db

TASKS = "/api/v1/tasks/"


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


def _walk(node: dict, parents=()):
    yield node, parents
    for child in node.get("Plans", []):
        yield from _walk(child, (*parents, node))


def search_plan(text: str) -> dict:
    """EXPLAIN (FORMAT JSON) of the API's first search page, planned as the API plans it."""
    queryset = selectors.task_search(selectors.task_list(), text).order_by("-search_rank", "-id")[:51]
    with selectors.task_search_plan():
        (plan,) = json.loads(queryset.explain(format="json"))
    return plan["Plan"]


@pytest.mark.parametrize("text", ["invoice", "renewal contract", "invoi*", "#123"])
@override_settings(TASK_SEARCH_CANDIDATES_MAX=1000)
def test_search_plan_reads_the_gin_index_and_limits_candidates_before_ranking(text):
    TaskFactory.create_batch(3, description="Send the invoice for the renewal.")

    nodes = list(_walk(search_plan(text)))

    gin_scans = [(node, parents) for node, parents in nodes if node.get("Index Name") == "task_search_gin"]
    assert gin_scans, "the candidates must come from the GIN index"
    scan, scan_parents = gin_scans[0]
    assert scan["Node Type"] == "Bitmap Index Scan"
    # Between the index and the ranking there is a Limit of at most TASK_SEARCH_CANDIDATES_MAX
    # rows: ranking never sees more rows than that, however many match.
    limits = [node for node in scan_parents if node["Node Type"] == "Limit"]
    candidate_limit = limits[-1]  # the innermost Limit above the index scan
    assert candidate_limit["Plan Rows"] <= 1000
    rank_sorts = [
        (node, parents)
        for node, parents in nodes
        if node["Node Type"] == "Sort" and any("ts_rank" in key for key in node.get("Sort Key", []))
    ]
    assert rank_sorts, "the page is ordered by rank"
    sort, _ = rank_sorts[0]
    below_sort = [child for child, _ in _walk(sort)]
    assert candidate_limit in below_sort and candidate_limit is not sort
    # The newest matches and the index's join the rows through the primary key; an OR of the two
    # had PostgreSQL filter every row of the table (160 ms at 1M tasks for a rare word).
    assert not [node for node, _ in nodes if node["Node Type"] == "Seq Scan"]


def test_search_ranks_only_the_bounded_candidates(staff_client):
    TaskFactory.create_batch(5, description="zeppelin hangar")
    TaskFactory.create_batch(2, description="nothing here")

    with override_settings(TASK_SEARCH_CANDIDATES_MAX=3):
        bounded = ids(staff_client.get(TASKS, {"search": "zeppelin"}))

    assert len(bounded) == 3
    assert len(ids(staff_client.get(TASKS, {"search": "zeppelin"}))) == 5


@override_settings(TASK_SEARCH_CANDIDATES_MAX=3, TASK_SEARCH_RECENT_WINDOW=1000)
def test_a_word_common_among_the_newest_tasks_ranks_its_newest_matches(staff_client):
    TaskFactory.create_batch(3, description="zeppelin zeppelin zeppelin")  # older, rank higher
    newest = TaskFactory.create_batch(3, description="zeppelin")

    found = ids(staff_client.get(TASKS, {"search": "zeppelin"}))

    assert sorted(found) == sorted(task.pk for task in newest)


@override_settings(TASK_SEARCH_CANDIDATES_MAX=3, TASK_SEARCH_RECENT_WINDOW=2)
def test_a_word_rare_among_the_newest_tasks_is_found_through_the_index_beside_its_newest_match(staff_client):
    older = TaskFactory.create_batch(2, description="zeppelin")
    TaskFactory.create_batch(4, description="unrelated")
    newest_match = TaskFactory(description="zeppelin")  # alone in the window of the 2 newest ids

    found = ids(staff_client.get(TASKS, {"search": "zeppelin"}))

    assert sorted(found) == sorted([newest_match.pk, *(task.pk for task in older)])


@pytest.mark.parametrize("text", ["invoice", "renewal contract", "invoi*"])
def test_recent_window_walks_the_primary_key_backwards_within_the_window_and_never_the_gin_index(text):
    TaskFactory.create_batch(3, description="Send the invoice for the renewal.")
    queryset = selectors.task_search_recent_matches(selectors.task_list(), selectors.task_search_query(text))

    with selectors.task_search_recent_plan():
        (plan,) = json.loads(queryset[:1000].explain(format="json"))

    nodes = [node for node, _ in _walk(plan["Plan"])]
    assert not [node for node in nodes if node.get("Index Name") == "task_search_gin"]
    assert not [node for node in nodes if "Bitmap" in node["Node Type"]]
    walk = next(node for node in nodes if node.get("Index Name") == "tasks_task_pkey" and node.get("Index Cond"))
    assert walk["Node Type"] == "Index Scan" and walk["Scan Direction"] == "Backward"
    assert "id >" in walk["Index Cond"]  # bounded by the window, not the whole table


def test_other_filters_choose_the_candidates_so_a_bound_never_hides_filtered_matches(staff_client):
    done = TaskFactory.create_batch(2, description="zeppelin", status=Task.Status.DONE)
    TaskFactory.create_batch(4, description="zeppelin", status=Task.Status.TODO)

    with override_settings(TASK_SEARCH_CANDIDATES_MAX=2):
        found = ids(staff_client.get(TASKS, {"search": "zeppelin", "status": "done"}))

    assert sorted(found) == sorted(task.pk for task in done)


def test_search_cursor_walks_every_candidate_once_in_rank_order(staff_client):
    project = ProjectFactory()
    # More occurrences of the word rank higher; several ties on rank are broken by id.
    expected = []
    for repeats in (4, 3, 3, 2, 1, 1, 1):
        expected.append(TaskFactory(project=project, title="x", description=" ".join(["zeppelin"] * repeats)))
    TaskFactory(project=project, description="unrelated")

    seen, ranks = [], []
    response = staff_client.get(TASKS, {"search": "zeppelin", "page_size": 2})
    while True:
        assert response.status_code == 200
        seen += ids(response)
        next_url = response.json()["next"]
        if next_url is None:
            break
        response = staff_client.get(next_url)

    assert sorted(seen) == sorted(task.pk for task in expected)
    assert len(seen) == len(set(seen))
    by_pk = {task.pk: task for task in expected}
    ranks = [by_pk[pk].description.count("zeppelin") for pk in seen]
    assert ranks == sorted(ranks, reverse=True)


def test_previous_link_of_a_search_page_goes_back_to_the_same_rows(staff_client):
    TaskFactory.create_batch(5, description="zeppelin")
    first = staff_client.get(TASKS, {"search": "zeppelin", "page_size": 2}).json()
    second = staff_client.get(first["next"]).json()

    back = staff_client.get(second["previous"]).json()

    assert [row["id"] for row in back["results"]] == [row["id"] for row in first["results"]]


@pytest.mark.parametrize("cursor", ["WyJuIiwibm90LWEtbnVtYmVyIiwiMSJd", "WyJuIiwiMC41Il0", "%%%"])
def test_a_tampered_search_cursor_is_a_400(staff_client, cursor):
    # ["n","not-a-number","1"] (rank not a float), ["n","0.5"] (id missing), not base64.
    TaskFactory(description="zeppelin")

    response = staff_client.get(TASKS, {"search": "zeppelin", "cursor": cursor})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_a_word_ending_in_a_star_matches_words_starting_with_it(staff_client):
    wanted = TaskFactory(description="The zeppelin hangar lease.")
    TaskFactory(description="A zebra.")

    assert ids(staff_client.get(TASKS, {"search": "zeppel*"})) == [wanted.pk]
    assert ids(staff_client.get(TASKS, {"search": "zeppel"})) == []
    assert ids(staff_client.get(TASKS, {"search": "hangar zepp*"})) == [wanted.pk]
    assert ids(staff_client.get(TASKS, {"search": "zebra zepp*"})) == []


@pytest.mark.parametrize("text", ["it's*", "a'b*", "\\*", "*", "x:* | y*", "'; DROP TABLE tasks_task; --*"])
def test_search_syntax_characters_never_break_the_query(staff_client, text):
    TaskFactory(description="zeppelin")

    response = staff_client.get(TASKS, {"search": text})

    assert response.status_code == 200


def test_search_plan_settings_do_not_outlive_the_block_inside_a_transaction():
    def seqscan() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW enable_seqscan")
            return cursor.fetchone()[0]

    before = seqscan()
    with selectors.task_search_plan():
        assert seqscan() == "off"
    assert seqscan() == before == "on"
