"""Bad input never a 500 (issue 9, defects 2, 3 and 5): each case is the hostile request that once
gave a 500 (or an oracle), with the 4xx, error code and field it must answer now."""

import base64
import json

import pytest
from rest_framework.test import APIClient

from reconciliation.engine import jobs
from reconciliation.models import Execution, ReconciliationJob, Record, TenantMembership, WebhookEndpoint
from tests.conftest import TASK_PERMISSIONS, grant
from tests.factories import UserFactory
from tests.reconciliation.factories import JobFactory, TenantFactory, load, member

pytestmark = pytest.mark.django_db
Role = TenantMembership.Role
JOBS = "/api/v1/reconciliations/jobs/"
CSV_HEADER = "external_id,amount,currency,booked_on"


def cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def assert_error(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    assert response.status_code == status, response.content[:500]
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert field in error.get("fields", {}) or field in error["message"], error
    return error


@pytest.fixture
def recon_admin():
    job = JobFactory()
    # Task and approvals permissions too: the JSON cases post to every app's endpoints.
    user = grant(
        member(job.tenant, Role.ADMIN), *TASK_PERMISSIONS, "approvals.view_version", "approvals.decide_version"
    )
    client = APIClient()
    client.force_login(user)
    return client, job


@pytest.fixture
def tasks_client(client_for):
    return client_for(grant(UserFactory(), *TASK_PERMISSIONS))


@pytest.fixture
def approvals_client(client_for):
    permissions = ["approvals.view_version", "approvals.decide_version", "approvals.view_automationauditlog"]
    return client_for(grant(UserFactory(), *permissions))


# --- 2. Rules that save but cannot run -----------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "path"),
    [
        ({"passes": {"tolerance": {"weights": {"amount": 1e308}}}}, "passes.tolerance.weights.amount"),
        ({"passes": {"tolerance": {"weights": {"date": 1e308, "amount": 1e308}}}}, "passes.tolerance.weights"),
        ({"passes": {"tolerance": {"amount_abs": 1e308}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"tolerance": {"amount_abs": "1e999999"}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"tolerance": {"amount_abs": "NaN"}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"tolerance": {"amount_abs": "1E-999999"}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"tolerance": {"amount_abs": 1e-320}}}, "passes.tolerance.amount_abs"),
        ({"passes": {"tolerance": {"amount_abs": "0.00001"}}}, "passes.tolerance.amount_abs"),
        ({"auto_threshold": 1e308}, "auto_threshold"),
        ({"date_window_days": 1e308}, "date_window_days"),
        ({"passes": {"group": {"max_group_size": 2**70}}}, "passes.group.max_group_size"),
    ],
)
def test_rules_with_out_of_range_numbers_are_a_400_naming_the_path(recon_admin, rules, path):
    client, job = recon_admin
    response = client.patch(f"{JOBS}{job.pk}/", {"rules": rules}, format="json")
    error = assert_error(response, 400, "invalid_rules", "rules")
    assert any(problem.startswith(path) for problem in error["fields"]["rules"]), error
    job.refresh_from_db()
    assert job.rules == {}


@pytest.mark.parametrize(
    "rules",
    [
        {"passes": {"tolerance": {"weights": {"amount": 100, "date": 100, "reference": 100, "counterparty": 100}}}},
        {"passes": {"tolerance": {"weights": {"amount": 5e-324, "date": 0, "reference": 0, "counterparty": 0}}}},
        {"passes": {"tolerance": {"amount_abs": "1000000.0000", "amount_pct": 1e-320}}},
        {"auto_threshold": 5e-324, "review_threshold": 0},
    ],
)
def test_rules_at_the_edges_of_their_ranges_save_and_run(recon_admin, rules):
    client, job = recon_admin
    load(job, "left", [("L1", "100.00", "EUR", "2026-03-10", "r1", "Acme")])
    load(job, "right", [("R1", "100.40", "EUR", "2026-03-11", "r1", "Acme")])
    assert client.patch(f"{JOBS}{job.pk}/", {"rules": rules}, format="json").status_code == 200
    execution = Execution.objects.create(tenant_id=job.tenant_id, job=job)
    jobs.run_execution.run_now({"execution_id": execution.pk})
    execution.refresh_from_db()
    assert execution.status == Execution.Status.SUCCEEDED, execution.error


def test_running_a_job_saved_with_out_of_range_rules_before_the_check_is_a_400_not_a_500(recon_admin):
    client, job = recon_admin
    ReconciliationJob.objects.filter(pk=job.pk).update(rules={"passes": {"tolerance": {"weights": {"amount": 1e308}}}})
    response = client.post(f"{JOBS}{job.pk}/run/", {}, format="json")
    error = assert_error(response, 400, "invalid_rules", "rules")
    assert error["fields"]["rules"][0].startswith("passes.tolerance.weights.amount")
    assert not Execution.objects.filter(job=job).exists()


# --- 3a-c. CSV uploads ---------------------------------------------------------------------------


def post_csv(client, job, body: bytes):
    return client.post(f"{JOBS}{job.pk}/records/?side=left", data=body, content_type="text/csv")


def test_an_empty_csv_body_is_a_400(recon_admin):
    client, job = recon_admin
    assert_error(post_csv(client, job, b""), 400, "invalid_upload")


@pytest.mark.parametrize(
    "column", ["row_no", "first_row_no", "problems", "existing_id", "checked", "s", "recon_skip", "existing"]
)
def test_csv_columns_named_like_the_staging_tables_own_are_kept_as_extras(recon_admin, column):
    client, job = recon_admin
    body = f"{CSV_HEADER},{column}\nL1,10.00,EUR,2026-03-10,x\nL2,11.00,EUR,2026-03-10,y\n".encode()
    response = post_csv(client, job, body)
    assert response.status_code == 201, response.content
    assert response.json()["inserted"] == 2
    assert Record.objects.get(job=job, external_id="L1").raw == {column: "x"}


def test_a_duplicate_external_id_is_still_reported_with_its_first_row(recon_admin):
    client, job = recon_admin
    body = f"{CSV_HEADER},first_row_no\nL1,10.00,EUR,2026-03-10,9\nL1,10.00,EUR,2026-03-10,9\n".encode()
    error = assert_error(post_csv(client, job, body), 400, "invalid_upload")
    assert error["rows"] == [{"row": 2, "errors": ["external_id: also on row 1 of this upload"]}]


@pytest.mark.parametrize("column", ["xmin", "ctid", "tableoid"])
def test_csv_columns_named_like_postgresql_system_columns_are_a_400(recon_admin, column):
    client, job = recon_admin
    body = f"{CSV_HEADER},{column}\nL1,10.00,EUR,2026-03-10,x\n".encode()
    error = assert_error(post_csv(client, job, body), 400, "invalid_upload")
    assert column in error["message"]


def test_a_csv_header_field_longer_than_the_csv_modules_limit_is_a_400(recon_admin):
    client, job = recon_admin
    body = f"{CSV_HEADER},{'x' * 131_073}\nL1,10.00,EUR,2026-03-10,x\n".encode()
    assert_error(post_csv(client, job, body), 400, "invalid_upload")


def test_a_huge_quoted_csv_header_field_is_a_400(recon_admin):
    client, job = recon_admin
    body = f'{CSV_HEADER},"{"x" * 200_000}"\n'.encode()
    assert_error(post_csv(client, job, body), 400, "invalid_upload")


# --- 3d. One size- and depth-limited JSON parser -------------------------------------------------


# (method, url) across the apps; {job} is the fixture's job. The job endpoints once had DRF's parser.
JSON_ENDPOINTS = [
    "post /api/v1/reconciliations/jobs/",
    "patch /api/v1/reconciliations/jobs/{job}/",
    "post /api/v1/reconciliations/jobs/{job}/records/",
    "post /api/v1/reconciliations/jobs/{job}/run/",
    "post /api/v1/tasks/",
    "post /api/v1/tasks/bulk-update/",
    "post /api/v1/approvals/versions/1/approve/",
]


def send_json(client, job, endpoint: str, body: str):
    method, url = endpoint.split(" ")
    return getattr(client, method)(url.format(job=job.pk), data=body, content_type="application/json")


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_deeply_nested_json_is_a_400_on_every_endpoint(recon_admin, endpoint):
    client, job = recon_admin
    response = send_json(client, job, endpoint, "[" * 1000 + "]" * 1000)
    assert_error(response, 400, "parse_error")


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_a_json_body_over_the_limit_is_a_413_on_every_endpoint(recon_admin, endpoint, settings):
    client, job = recon_admin
    body = json.dumps({"rules": {}, "name": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)})
    assert_error(send_json(client, job, endpoint, body), 413, "payload_too_large")


@pytest.mark.parametrize("endpoint", JSON_ENDPOINTS)
def test_a_lone_surrogate_in_json_is_a_400_on_every_endpoint(recon_admin, endpoint):
    client, job = recon_admin
    assert_error(send_json(client, job, endpoint, '{"name": "\\ud800"}'), 400, "parse_error")


def test_every_api_view_parses_json_with_the_projects_parser():
    from django.urls import get_resolver

    from project.api.renderers import ORJSONParser

    def views(patterns):
        for pattern in patterns:
            if hasattr(pattern, "url_patterns"):
                yield from views(pattern.url_patterns)
            else:
                yield pattern.callback

    checked = 0
    for callback in views(get_resolver().url_patterns):
        view_class = getattr(callback, "cls", None)
        if view_class is None or not hasattr(view_class, "parser_classes"):
            continue
        json_parsers = [p for p in view_class.parser_classes if p.media_type == "application/json"]
        assert all(issubclass(p, ORJSONParser) for p in json_parsers), view_class
        checked += 1
    assert checked > 20


# --- 3e, 3j. Cursors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["[" * 2500, json.dumps(["n", "nan", "1"]), json.dumps(["n", "1e999", "1"]), json.dumps(["n", "-inf", "1"])],
    ids=["deeply-nested", "nan", "1e999", "-inf"],
)
def test_malformed_search_cursors_are_a_400_invalid_cursor(tasks_client, raw):
    response = tasks_client.get("/api/v1/tasks/", {"search": "invoice", "cursor": cursor_of(raw)})
    assert_error(response, 400, "invalid_cursor", "cursor")


@pytest.mark.parametrize("url", [JOBS, "/api/v1/tasks/", "/api/v1/approvals/versions/", "/api/v1/approvals/audit-log/"])
def test_a_cursor_that_decodes_to_deep_nesting_is_a_400_on_list_endpoints(recon_admin, approvals_client, url):
    client = recon_admin[0] if "reconciliation" in url else approvals_client
    if url == "/api/v1/tasks/":
        client = APIClient()
        client.force_login(grant(UserFactory(), *TASK_PERMISSIONS))
    response = client.get(url, {"cursor": cursor_of("[" * 2500)})
    assert_error(response, 400, "invalid_cursor", "cursor")


@pytest.mark.parametrize("position", [["left", "a\u0000b"], ["left", "x" * 5000], ["\u0000", "a"]])
def test_a_records_cursor_with_text_postgresql_cannot_take_is_a_400(recon_admin, position):
    client, job = recon_admin
    raw = json.dumps(["n", *position])
    response = client.get(f"{JOBS}{job.pk}/records/", {"cursor": cursor_of(raw)})
    assert_error(response, 400, "invalid_cursor", "cursor")


def test_a_cursor_datetime_with_an_offset_beyond_15_59_is_a_400(tasks_client):
    raw = json.dumps(["n", "2026-01-01T00:00:00+20:00", "5"])
    assert_error(tasks_client.get("/api/v1/tasks/", {"cursor": cursor_of(raw)}), 400, "invalid_cursor", "cursor")


# --- 3f. UTC offsets beyond +-15:59 in datetime filters -------------------------------------------


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/tasks/", "deadline_after"),
        ("/api/v1/tasks/", "deadline_before"),
        ("/api/v1/tasks/", "created_after"),
        ("/api/v1/tasks/", "created_before"),
        ("/api/v1/approvals/versions/", "created_after"),
        ("/api/v1/approvals/versions/", "created_before"),
        ("/api/v1/approvals/audit-log/", "created_after"),
        ("/api/v1/approvals/audit-log/", "created_before"),
    ],
)
@pytest.mark.parametrize("offset", ["+20:00", "-18:15", "+16:00"])
def test_datetime_filters_with_an_offset_beyond_15_59_are_a_400_naming_the_parameter(client_for, url, param, offset):
    permissions = [*TASK_PERMISSIONS, "approvals.view_version", "approvals.view_automationauditlog"]
    client = client_for(grant(UserFactory(), *permissions))
    response = client.get(url, {param: f"2026-01-01T00:00:00{offset}"})
    assert_error(response, 400, "invalid", param)


def test_datetime_filters_accept_offsets_up_to_15_59(tasks_client):
    response = tasks_client.get("/api/v1/tasks/", {"deadline_after": "2026-01-01T00:00:00+15:59"})
    assert response.status_code == 200


def test_every_datetime_filter_is_the_offset_checking_one():
    import django_filters

    from approvals.api import AuditLogFilter, VersionFilter
    from project.api.filters import IsoDateTimeFilter
    from tasks.api import TaskFilter

    for filterset in (TaskFilter, VersionFilter, AuditLogFilter):
        for name, declared in filterset.base_filters.items():
            if isinstance(declared, django_filters.IsoDateTimeFilter):
                assert isinstance(declared, IsoDateTimeFilter), (filterset, name)


# --- 3g. Non-numeric ids in URLs -------------------------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "reject", "revert"])
@pytest.mark.parametrize("version_id", ["AAA", "null,null", "²", "1.5", "-1", "99999999999999999999999"])
def test_non_numeric_version_ids_in_action_urls_are_a_404(approvals_client, action, version_id):
    response = approvals_client.post(f"/api/v1/approvals/versions/{version_id}/{action}/", {"reason": "x"})
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/tasks/AAA/",
        "/api/v1/projects/AAA/",
        "/api/v1/approvals/topics/AAA/",
        "/api/v1/reconciliations/jobs/AAA/",
        "/api/v1/reconciliations/matches/null,null/",
        "/api/v1/reconciliations/AAA/summary",
    ],
)
def test_non_numeric_ids_in_any_detail_url_are_a_404(client_for, url):
    client = client_for(grant(UserFactory(), *TASK_PERMISSIONS, "approvals.view_topic"))
    assert client.get(url).status_code == 404


# --- 3h. Unicode digits -----------------------------------------------------------------------------


@pytest.mark.parametrize("assignee", ["²", "١٢", "\uff15", " 5", "", "0"])
def test_stats_assignee_must_be_an_ascii_positive_integer(tasks_client, assignee):
    response = tasks_client.get("/api/v1/tasks/stats/", {"assignee": assignee})
    assert_error(response, 400, "invalid", "assignee")


@pytest.mark.parametrize(
    ("url", "param", "value"),
    [
        ("/api/v1/tasks/", "assignee", "²"),
        ("/api/v1/tasks/", "project", "nan"),
        ("/api/v1/tasks/", "assignee", "1e999"),
        ("/api/v1/tasks/", "project", "1.5"),
        ("/api/v1/tasks/", "project", "0"),
        ("/api/v1/tasks/", "project", "99999999999999999999999"),
        ("/api/v1/approvals/versions/", "author", "AAA"),
        ("/api/v1/approvals/audit-log/", "rule", "-1"),
        ("/api/v1/reconciliations/matches/", "amount_min", "1e-999999"),
        ("/api/v1/reconciliations/matches/", "amount_max", "-1e999999"),
        ("/api/v1/reconciliations/matches/", "confidence_max", "1e-999999"),
        ("/api/v1/reconciliations/matches/", "confidence_min", "inf"),
        ("/api/v1/reconciliations/exceptions/", "amount_min", "1e-999999"),
        ("/api/v1/reconciliations/exceptions/", "job", "1.5"),
        ("/api/v1/reconciliations/executions/", "job", "null,null"),
    ],
)
def test_number_filters_are_a_400_naming_the_parameter_for_what_is_not_a_number_in_range(
    recon_admin, approvals_client, url, param, value
):
    client = approvals_client if "approvals" in url else recon_admin[0]
    assert_error(client.get(url, {param: value}), 400, None, param)


def test_every_filter_of_every_api_view_is_one_of_the_checked_kinds():
    """Numbers, ids and datetimes are filtered with project/api/filters.py's filters (bounded, no
    oracle), never django-filter's NumberFilter, ModelChoiceFilter or IsoDateTimeFilter."""
    import django_filters
    from django.urls import get_resolver

    from project.api import filters

    def views(patterns):
        for pattern in patterns:
            if hasattr(pattern, "url_patterns"):
                yield from views(pattern.url_patterns)
            elif getattr(pattern.callback, "cls", None) is not None:
                yield pattern.callback.cls

    unchecked = (django_filters.NumberFilter, django_filters.ModelChoiceFilter, django_filters.IsoDateTimeFilter)
    checked = (filters.IdFilter, filters.DecimalFilter, filters.IsoDateTimeFilter)
    seen = 0
    for view in set(views(get_resolver().url_patterns)):
        assert not getattr(view, "filterset_fields", None), f"{view.__name__}: declare a filterset_class"
        filterset = getattr(view, "filterset_class", None)
        for name, declared in filterset.base_filters.items() if filterset else ():
            seen += 1
            if isinstance(declared, unchecked):
                assert isinstance(declared, checked), (view.__name__, name, type(declared))
    assert seen > 30


# --- 3i. Form bodies -------------------------------------------------------------------------------


def test_a_form_body_with_too_many_fields_is_a_400(tasks_client, settings):
    body = "&".join(f"ids={n}" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 5))
    response = tasks_client.post(
        "/api/v1/tasks/bulk-update/", data=body, content_type="application/x-www-form-urlencoded"
    )
    assert_error(response, 400, "too_many_fields")


def test_a_form_body_over_the_size_limit_is_a_413(tasks_client, settings):
    body = "title=" + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)
    response = tasks_client.post("/api/v1/tasks/", data=body, content_type="application/x-www-form-urlencoded")
    assert_error(response, 413, "payload_too_large")


# --- 5. No existence oracle across tenants ----------------------------------------------------------


def oracle_world():
    mine, theirs = TenantFactory(), TenantFactory()
    user = member(mine, Role.ADMIN)
    client = APIClient()
    client.force_login(user)
    their_job = JobFactory(tenant=theirs)
    their_endpoint = WebhookEndpoint.objects.create(
        tenant=theirs, url="https://hooks.example.com/x", secret="s", events=["execution.completed"]
    )
    missing = 2**31 - 7
    return client, mine, theirs, their_job, their_endpoint, missing


@pytest.mark.parametrize(
    ("url", "param", "target"),
    [
        ("/api/v1/reconciliations/jobs/", "tenant", "tenant"),
        ("/api/v1/reconciliations/executions/", "job", "job"),
        ("/api/v1/reconciliations/matches/", "job", "job"),
        ("/api/v1/reconciliations/exceptions/", "job", "job"),
        ("/api/v1/reconciliations/webhook-deliveries/", "endpoint", "endpoint"),
    ],
)
def test_filtering_by_another_tenants_id_answers_like_a_nonexistent_id(url, param, target):
    client, _mine, theirs, their_job, their_endpoint, missing = oracle_world()
    their_id = {"tenant": theirs.pk, "job": their_job.pk, "endpoint": their_endpoint.pk}[target]
    theirs_response = client.get(url, {param: their_id})
    missing_response = client.get(url, {param: missing})
    assert theirs_response.status_code == missing_response.status_code
    body_theirs = json.dumps(theirs_response.json()).replace(str(their_id), "ID")
    body_missing = json.dumps(missing_response.json()).replace(str(missing), "ID")
    assert body_theirs == body_missing


def test_creating_a_job_for_another_tenant_answers_like_a_nonexistent_tenant():
    client, _mine, theirs, _job, _endpoint, missing = oracle_world()
    answers = []
    for tenant_id in (theirs.pk, missing):
        response = client.post(JOBS, {"tenant": tenant_id, "name": "x", "rules": {}}, format="json")
        answers.append((response.status_code, json.dumps(response.json()).replace(str(tenant_id), "ID")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400
    assert not ReconciliationJob.objects.filter(name="x").exists()


def test_creating_a_webhook_endpoint_for_another_tenant_answers_like_a_nonexistent_tenant():
    client, _mine, theirs, _job, _endpoint, missing = oracle_world()
    answers = []
    for tenant_id in (theirs.pk, missing):
        body = {"tenant": tenant_id, "url": "https://hooks.example.com/y", "events": ["execution.completed"]}
        response = client.post("/api/v1/reconciliations/webhook-endpoints/", body, format="json")
        answers.append((response.status_code, json.dumps(response.json()).replace(str(tenant_id), "ID")))
    assert answers[0] == answers[1]


# --- 7. Viewers creating a job ----------------------------------------------------------------------


def test_a_viewer_creating_a_job_in_their_tenant_gets_403():
    tenant = TenantFactory()
    client = APIClient()
    client.force_login(member(tenant, Role.VIEWER))
    response = client.post(JOBS, {"tenant": tenant.pk, "name": "x", "rules": {}}, format="json")
    assert_error(response, 403, "permission_denied")


def test_an_operator_creating_a_job_in_their_tenant_gets_403():
    tenant = TenantFactory()
    client = APIClient()
    client.force_login(member(tenant, Role.OPERATOR))
    response = client.post(JOBS, {"tenant": tenant.pk, "name": "x", "rules": {}}, format="json")
    assert_error(response, 403, "permission_denied")
