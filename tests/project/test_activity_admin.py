"""The activity log's admin page: keyset pages, the API's filters, no COUNT, staff only."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from project.admin_activity import PAGE_SIZE
from project.models import ActivityLog
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "/admin/activity-log/"


@pytest.fixture
def admin_client_(db):
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def rows_on(response) -> list[str]:
    return re.findall(r"<td>(act_\d+)</td>", response.content.decode())


def month_start() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, 1, tzinfo=UTC)


def test_the_page_walks_the_log_newest_first_without_counting(admin_client_, django_assert_max_num_queries):
    start = month_start()
    ActivityLog.objects.bulk_create(
        [
            ActivityLog(category="tasks", action=f"act_{n}", created_at=start + timedelta(minutes=n))
            for n in range(PAGE_SIZE + 5)
        ]
    )
    with django_assert_max_num_queries(10) as captured:
        first = admin_client_.get(URL)
    assert first.status_code == 200
    # (The admin header's approvals badge counts pending versions; the log itself is never counted.)
    reads_of_the_log = [q["sql"] for q in captured.captured_queries if "project_activitylog" in q["sql"]]
    assert len(reads_of_the_log) == 1 and "COUNT(" not in reads_of_the_log[0].upper()
    assert rows_on(first)[:2] == [f"act_{PAGE_SIZE + 4}", f"act_{PAGE_SIZE + 3}"]
    assert len(rows_on(first)) == PAGE_SIZE
    older = re.search(r'href="([^"]+)" rel="next"', first.content.decode())[1].replace("&amp;", "&")
    second = admin_client_.get(older)
    assert rows_on(second) == [f"act_{n}" for n in range(4, -1, -1)]


def test_the_page_applies_the_apis_filters(admin_client_):
    start = month_start()
    user = UserFactory()
    ActivityLog.objects.create(category="tasks", action="act_1", user=user, metadata={"job_id": 3}, created_at=start)
    ActivityLog.objects.create(category="tasks", action="act_2", metadata={"job_id": 4}, created_at=start)
    assert rows_on(admin_client_.get(URL, {"user": user.id})) == ["act_1"]
    assert rows_on(admin_client_.get(URL, {"metadata_key": "job_id", "metadata_value": "4"})) == ["act_2"]
    assert rows_on(admin_client_.get(URL, {"created_before": start.isoformat()})) == []


def test_a_bad_filter_is_named_on_the_page(admin_client_):
    response = admin_client_.get(URL, {"created_after": "last tuesday"})
    assert response.status_code == 400
    assert "created_after" in response.content.decode()


def test_a_bad_cursor_goes_back_to_the_newest_page(admin_client_):
    response = admin_client_.get(URL, {"cursor": "nonsense"})
    assert response.status_code == 302 and response["Location"] == URL


def test_staff_read_it_and_nobody_else():
    # Which rows each staff member reads: tests/reconciliation/test_activity_scope.py.
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    assert client.get(URL).status_code == 200
    assert Client().get(URL).status_code == 302  # to the admin login


def test_every_admin_page_links_staff_to_it():
    client = Client()
    client.force_login(UserFactory(is_staff=True))
    page = client.get("/admin/").content.decode()
    assert f'href="{URL}"' in page
