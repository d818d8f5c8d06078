"""The API's filter backend skips django-filter only when no query parameter can reach a filter."""

import django_filters
import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from project.api.filters import FilterBackend
from tasks.models import Task
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db


class RangeFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Task.Status.choices)
    created = django_filters.IsoDateTimeFromToRangeFilter(field_name="created_at")

    class Meta:
        model = Task
        fields = []


class RequiredFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Task.Status.choices, required=True)

    class Meta:
        model = Task
        fields = []


class View:
    def __init__(self, filterset_class):
        self.filterset_class = filterset_class


def filtered(filterset_class, query: dict, monkeypatch) -> tuple[list[int], int]:
    """(ids the backend returns, FilterSets it built)."""
    built = []
    original = filterset_class.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(filterset_class, "__init__", counting_init)
    request = Request(APIRequestFactory().get("/", query))
    try:
        result = FilterBackend().filter_queryset(request, Task.objects.order_by("id"), View(filterset_class))
        return [task.pk for task in result], len(built)
    except ValidationError as error:
        return [type(error).__name__], len(built)


def test_a_request_without_filter_parameters_builds_no_filterset(monkeypatch):
    tasks = [TaskFactory(status="todo"), TaskFactory(status="done")]

    assert filtered(RangeFilterSet, {}, monkeypatch) == ([t.pk for t in tasks], 0)
    assert filtered(RangeFilterSet, {"cursor": "abc", "page_size": "5"}, monkeypatch) == ([t.pk for t in tasks], 0)


@pytest.mark.parametrize(
    "query",
    [{"status": "done"}, {"status": ""}, {"status": "bogus"}, {"created_after": "2000-01-01T00:00:00Z"}],
)
def test_a_parameter_a_filter_reads_runs_the_filterset(monkeypatch, query):
    TaskFactory(status="todo")
    done = TaskFactory(status="done")

    ids, built = filtered(RangeFilterSet, query, monkeypatch)

    assert built == 1
    expected = {"done": [done.pk], "bogus": ["ValidationError"]}.get(query.get("status"))
    if expected is not None:
        assert ids == expected


def test_a_filterset_with_a_required_filter_always_runs(monkeypatch):
    TaskFactory()

    assert filtered(RequiredFilterSet, {}, monkeypatch) == (["ValidationError"], 1)
