"""The performance cockpit under the admin: seven pages and the superuser's maintenance actions.

Reached from the admin index through the unmanaged Dashboard model. Viewing needs
`monitoring.view_dashboard`; every action needs a superuser, a confirmation (POST), runs as a
`monitoring.maintenance_*` job on queue `maintenance` and is recorded in ActivityLog.
"""

import functools
import json
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, transaction
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from monitoring import actions, history, jobs, report
from monitoring.explain_guard import UnsafeStatement, check_read_only_functions
from monitoring.models import Dashboard
from monitoring.selectors import backlog, connections, indexes, pool, reconciliation, statements, system, tables
from monitoring.selectors.advisor import index_advice, suggestions_by_table
from monitoring.selectors.base import request_lock_timeout, unavailable
from project.activity import activity_record
from project.admin_widgets import ReadOnlyAdminMixin
from project.db.replica import replication_lag
from project.models import JobRun
from project.outbox import outbox_enqueue
from project.retention import retention_overview

VIEW_PERMISSION = "monitoring.view_dashboard"

PAGES = [
    ("overview", "Overview"),
    ("indexes", "Index usage"),
    ("pool", "Pool state"),
    ("backlog", "Pending backlog"),
    ("queries", "Queries"),
    ("tables", "Tables, partitions, views"),
    ("system", "System"),
    ("advisor", "Index advisor"),
    ("retention", "Retention"),
]


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    job: object | None
    param: str  # the one request parameter that names the object (validated against the catalog)
    safety: str


ACTIONS = {
    action.name: action
    for action in [
        Action(
            "reindex",
            "REINDEX CONCURRENTLY",
            jobs.maintenance_reindex,
            "oid",
            "Builds a new copy of the index next to the old one and swaps them: reads and writes go on; "
            "it needs disk for a second copy and fails (leaving an invalid index to drop) on a lock timeout.",
        ),
        Action(
            "drop_invalid_index",
            "Drop invalid index",
            jobs.maintenance_drop_invalid_index,
            "oid",
            "DROP INDEX CONCURRENTLY of an index a failed concurrent build left invalid: nothing reads it, "
            "every write still maintains it.",
        ),
        Action(
            "cancel_backend",
            "Cancel query",
            jobs.maintenance_cancel_backend,
            "pid",
            "pg_cancel_backend: the running statement fails with an error; the session stays.",
        ),
        Action(
            "terminate_backend",
            "Terminate backend",
            jobs.maintenance_terminate_backend,
            "pid",
            "pg_terminate_backend: the connection is closed and its open transaction rolled back.",
        ),
        Action(
            "vacuum",
            "VACUUM (ANALYZE)",
            jobs.maintenance_vacuum,
            "oid",
            "Marks dead rows reusable and refreshes planner statistics. No exclusive lock; reads the whole "
            "table (progress shows below while it runs).",
        ),
        Action(
            "vacuum_freeze",
            "VACUUM (FREEZE, ANALYZE)",
            jobs.maintenance_vacuum_freeze,
            "oid",
            "Freezes every row's transaction id now, so the table's age (and, once every old table is done, "
            "the database's distance to wraparound) drops; also refreshes planner statistics. No exclusive "
            "lock; reads and writes every page not yet all-frozen, so it takes longer than a plain VACUUM.",
        ),
        Action(
            "create_partitions",
            "Create missing partitions",
            jobs.maintenance_create_partitions,
            "oid",
            "Runs the partition maintenance of this table now: creates the months listed below and detaches "
            "the partitions listed below, moving them to the archive schema (never dropped).",
        ),
        Action(
            "refresh_view",
            "Refresh materialized view",
            jobs.maintenance_refresh_view,
            "name",
            "REFRESH MATERIALIZED VIEW CONCURRENTLY: readers keep the old contents until it finishes.",
        ),
        Action(
            "reset_statements",
            "Reset pg_stat_statements",
            jobs.maintenance_reset_statements,
            "",
            "Lifetime totals start from zero. The 5-minute snapshots keep the history, so windows still work.",
        ),
        Action(
            "explain",
            "EXPLAIN",
            jobs.maintenance_explain,
            "queryid",
            "Plans the statement without running it (a generic plan when it has $n parameters).",
        ),
        Action(
            "explain_analyze",
            "EXPLAIN ANALYZE",
            jobs.maintenance_explain,
            "queryid",
            "Runs a read query with the values you give, in a READ ONLY transaction that is rolled back, "
            "with a 5 s statement timeout. A statement calling a VOLATILE function (pg_cancel_backend, "
            "nextval, set_config ...) is refused: a rollback does not undo what such a function does.",
        ),
        Action(
            "run_job",
            "Run beat job now",
            None,
            "task",
            "Sends the scheduled job to its queue now, as beat would; its JobRun shows the outcome.",
        ),
    ]
}


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Http404(f"{name} must be an integer") from None


@admin.register(Dashboard)
class DashboardAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION)

    def get_urls(self):
        def page(name, view):
            return path(f"{name}/", self.admin_site.admin_view(self._degrading(view)), name=f"monitoring_{name}")

        return [
            path(
                "",
                self.admin_site.admin_view(self._degrading(self.overview_view)),
                name="monitoring_dashboard_changelist",
            ),
            page("indexes", self.indexes_view),
            page("pool", self.pool_view),
            page("backlog", self.backlog_view),
            page("queries", self.queries_view),
            page("tables", self.tables_view),
            page("system", self.system_view),
            page("advisor", self.advisor_view),
            page("retention", self.retention_view),
            path("action/<str:name>/", self.admin_site.admin_view(self.action_view), name="monitoring_action"),
            path("run/<str:celery_id>/", self.admin_site.admin_view(self.run_view), name="monitoring_run"),
        ]

    # --- helpers ----------------------------------------------------------------------------

    def _degrading(self, view):
        """Every read of the page waits for locks at most MONITORING_LOCK_TIMEOUT; each panel falls
        back on its own (`_panels`). A read that still fails outside a panel (a database in
        trouble) shows a page saying so, with status 503, instead of a server error."""

        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            self._require_view(request)  # before any catalog is read
            try:
                with request_lock_timeout():
                    response = view(request, *args, **kwargs)
                    if hasattr(response, "render"):
                        response.render()  # lazily evaluated context is read under the timeout too
                    return response
            except DatabaseError as exc:
                response = self._render(
                    request,
                    "unavailable.html",
                    "unavailable",
                    {"error": str(exc).splitlines()[0][:300], "timeout": settings.MONITORING_STATEMENT_TIMEOUT},
                )
                response.status_code = 503
                return response

        return wrapper

    @staticmethod
    def _panels(**readers) -> dict:
        """{panel: its data, or None}, plus "panel_errors": {panel: why it is missing}. One panel
        cut off by a lock or statement timeout leaves the others on the page."""
        values, errors = {}, {}
        for name, read in readers.items():
            try:
                values[name] = read()
            except DatabaseError as exc:
                values[name] = None
                errors[name] = unavailable(exc)
        return {**values, "panel_errors": errors}

    def _require_view(self, request):
        if not request.user.has_perm(VIEW_PERMISSION):
            raise PermissionDenied

    def _render(self, request, template: str, page: str, context: dict):
        self._require_view(request)
        return TemplateResponse(
            request,
            f"admin/monitoring/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": dict(PAGES).get(page, page),
                "pages": [
                    (name, label, reverse(f"admin:monitoring_{'dashboard_changelist' if name == 'overview' else name}"))
                    for name, label in PAGES
                ],
                "page": page,
                "is_superuser": request.user.is_superuser,
                **context,
            },
        )

    @staticmethod
    def _chart(series_by_name: dict, *, title: str, percent: bool = False, unit: str = "", element_id: str) -> dict:
        datasets = [
            {"label": (key if len(series_by_name) == 1 else f"{name} {key}") if key else name, "data": points}
            for name, by_key in series_by_name.items()
            for key, points in by_key.items()
        ]
        return {"id": element_id, "title": title, "percent": percent, "unit": unit, "datasets": datasets}

    # --- pages ------------------------------------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        return self.overview_view(request)

    def overview_view(self, request):
        panels = self._panels(locks=connections.lock_waits, full=report.full_report)
        full = panels.pop("full") or {}
        return self._render(
            request,
            "overview.html",
            "overview",
            {
                "services": report.service_status(),  # live: cheap, and the first thing to trust
                "locks": panels["locks"],  # live, not the minute-old report: the incident is now
                "figures": full.get("figures", []),
                "recommendations": full.get("recommendations", []),
                "taken_at": full.get("timestamp", ""),
                "figure_errors": (full.get("data") or {}).get("errors"),
                "panel_errors": panels["panel_errors"],
                "full_report_url": "/api/v1/database/performance/full-report",
            },
        )

    def indexes_view(self, request):
        window_days = 7
        exact_oid = _exact_oid(request)
        panels = self._panels(
            data=indexes.index_usage,
            since=lambda: history.index_scans_since(timezone.now() - timedelta(days=window_days)),
            exact=lambda: indexes.index_bloat_exact(exact_oid) if exact_oid is not None else None,
        )
        data = panels["data"] or {"indexes": [], "missing_index_tables": [], "thresholds": {}}
        since = panels["since"] or {}
        for row in data["indexes"]:
            row["history"] = since.get((row["schema"], row["index"]), {})
        flag = request.GET.get("flag", "")
        # Findings first (biggest first), then every other index by size.
        rows = sorted(
            (row for row in data["indexes"] if not flag or flag in row["flags"]),
            key=lambda row: (not row["flags"], -(row["size_bytes"] or 0)),
        )
        exact = panels["exact"]
        counts = {
            name: sum(1 for row in data["indexes"] if name in row["flags"])
            for name in ("unused", "duplicate", "invalid")
        }
        self._attach_suggestions(data["missing_index_tables"])
        return self._render(
            request,
            "indexes.html",
            "indexes",
            {
                "data": data,
                "rows": rows,
                "flag": flag,
                "counts": counts,
                "exact": exact,
                "window_days": window_days,
                "panel_errors": panels["panel_errors"],
            },
        )

    @staticmethod
    def _attach_suggestions(missing_tables: list[dict]) -> None:
        """The advisor's (unverified, parse-only) index for each table that misses one, so the
        page names a concrete index; its own page verifies them."""
        try:
            by_table = suggestions_by_table(index_advice(verify_candidates=False))
        except DatabaseError as exc:
            for table in missing_tables:
                table["advisor_error"] = str(exc).splitlines()[0][:200]
            return
        for table in missing_tables:
            table["suggestions"] = by_table.get(table["name"], [])

    def advisor_view(self, request):
        return self._render(request, "advisor.html", "advisor", {"advice": index_advice()})

    def retention_view(self, request):
        return self._render(request, "retention.html", "retention", {"retention": retention_overview()})

    def pool_view(self, request):
        charts = [
            self._chart(
                history.series(["pool.usage_ratio"]),
                title="Pool use per process (24 h)",
                percent=True,
                element_id="chart-pool",
            ),
            self._chart(
                history.series(["db.connections"]),
                title="Server connections by state (24 h)",
                element_id="chart-connections",
            ),
        ]
        return self._render(
            request,
            "pool.html",
            "pool",
            {
                **self._panels(
                    pools=pool.application_pools,
                    server=connections.connections,
                    pgbouncer=pool.pgbouncer_pools,
                    replica=replication_lag,
                ),
                "charts": charts,
            },
        )

    def backlog_view(self, request):
        live = request.GET.get("inspect") == "live"
        charts = [
            self._chart(
                history.series(["backlog.approvals_pending"]),
                title="Pending approvals (24 h)",
                element_id="chart-pending",
            ),
            self._chart(
                history.series(["backlog.approvals_oldest_age_s", "backlog.approvals_p95_age_s"]),
                title="Age of pending approvals, seconds (24 h)",
                element_id="chart-pending-age",
            ),
            self._chart(
                history.series(["celery.queue_depth"]), title="Celery queue depth (24 h)", element_id="chart-queues"
            ),
        ]
        return self._render(
            request,
            "backlog.html",
            "backlog",
            {
                **self._panels(
                    data=lambda: backlog.backlog(live_inspect=live), recon=reconciliation.reconciliation_backlog
                ),
                "charts": charts,
            },
        )

    def queries_view(self, request):
        order = request.GET.get("order", "total")
        window = request.GET.get("window") or None
        if order not in statements.ORDERS or (window is not None and window not in statements.WINDOWS):
            order, window = "total", None
            messages.warning(request, "Unknown order or window: showing lifetime totals by total time.")
        return self._render(
            request,
            "queries.html",
            "queries",
            {
                **self._panels(data=lambda: statements.slow_queries(order=order, window=window)),
                "orders": list(statements.ORDERS),
                "windows": list(statements.WINDOWS),
            },
        )

    def tables_view(self, request):
        exact_oid = _exact_oid(request)
        return self._render(
            request,
            "tables.html",
            "tables",
            self._panels(
                tables=tables.tables,
                partitions=tables.partitions,
                views=tables.materialized_views,
                progress=connections.maintenance_progress,
                exact=lambda: tables.table_bloat_exact(exact_oid) if exact_oid is not None else None,
            ),
        )

    def system_view(self, request):
        charts = [
            self._chart(
                history.series(["system.cpu_percent", "system.memory_percent"]),
                title="CPU and memory % (24 h)",
                element_id="chart-system",
            ),
            self._chart(
                history.series(["db.size_bytes"], hours=24 * 14),
                title="Database size (14 days)",
                unit="bytes",
                element_id="chart-dbsize",
            ),
            self._chart(
                history.series(["http.route_p95_ms"]),
                title="Request p95 by route, ms (24 h)",
                unit="ms",
                element_id="chart-routes",
            ),
        ]
        return self._render(
            request,
            "system.html",
            "system",
            {
                **self._panels(
                    node=system.node,
                    database=system.database,
                    sequences=lambda: system.sequences()[:20],
                    wraparound=system.wraparound,
                    routes=history.route_latency,
                ),
                "charts": charts,
                "routes_shown": settings.MONITORING_ROUTES_SHOWN,
            },
        )

    # --- actions ----------------------------------------------------------------------------

    def _action_target(self, action: Action, request) -> tuple[dict, dict]:
        """(job kwargs, what the confirmation page shows), from the catalog; 404 if it is gone."""
        source = request.POST if request.method == "POST" else request.GET
        if action.param == "oid":
            oid = _int(source.get("oid"), "oid")
            target = (
                actions.index_by_oid(oid)
                if action.name in ("reindex", "drop_invalid_index")
                else actions.table_by_oid(oid)
            )
            if target is None:
                raise Http404("no such index or table")
            if action.name == "create_partitions":
                try:
                    target = {**target, **actions.create_partitions_plan(oid=oid)}
                except actions.ActionRefused as refused:
                    target = {**target, "refused": str(refused)}
            return {"oid": oid}, target
        if action.param == "pid":
            pid = _int(source.get("pid"), "pid")
            target = connections.backend(pid)
            if target is None:
                raise Http404("no such backend")
            return {"pid": pid}, target
        if action.param == "name":
            from project.matviews import UnknownMaterializedView, get_materialized_view

            try:
                view = get_materialized_view(source.get("name", ""))
            except UnknownMaterializedView:
                raise Http404("no such registered materialized view") from None
            return {"name": view.name}, asdict(view)
        if action.param == "queryid":
            queryid = _int(source.get("queryid"), "queryid")
            target = statements.statement(queryid)
            if target is None:
                raise Http404("no such statement in pg_stat_statements")
            kwargs = {"queryid": queryid, "analyze": action.name == "explain_analyze"}
            if action.name == "explain_analyze":
                kwargs["parameters"] = [source.get(f"p{n}", "") for n in range(1, _placeholders(target["query"]) + 1)]
            target["placeholders"] = list(range(1, _placeholders(target["query"]) + 1))
            if action.name == "explain_analyze" and request.method != "POST":
                # Said before the superuser confirms; the job checks again (the catalog may change).
                try:
                    check_read_only_functions(actions.top_level_text(queryid))
                except (UnsafeStatement, actions.ActionRefused) as refused:
                    target["refused"] = str(refused)
            return kwargs, target
        if action.param == "task":
            from django_celery_beat.models import PeriodicTask

            task = get_object_or_404(PeriodicTask, pk=_int(source.get("task"), "task"))
            return {"task": task.pk}, {
                "name": task.name,
                "job": task.task,
                "queue": task.queue or "",
                "kwargs": task.kwargs,
            }
        return {}, {}

    def action_view(self, request, name: str):
        self._require_view(request)
        if not request.user.is_superuser:
            raise PermissionDenied
        action = ACTIONS.get(name)
        if action is None:
            raise Http404("no such action")
        kwargs, target = self._action_target(action, request)
        if request.method != "POST":
            return self._render(
                request, "confirm.html", action.label, {"action": action, "target": target, "kwargs": kwargs}
            )
        # Through the outbox: a broker outage delays the job, it does not hang or fail this page.
        with transaction.atomic():
            if action.name == "run_job":
                from django_celery_beat.models import PeriodicTask

                task = PeriodicTask.objects.get(pk=kwargs["task"])
                message = outbox_enqueue(task.task, kwargs=json.loads(task.kwargs or "{}"), queue=task.queue or "")
            else:
                message = outbox_enqueue(action.job.name, kwargs={**kwargs, "requested_by": request.user.pk})
            celery_id = str(message.idempotency_key)  # the outbox publishes it as the Celery task id
            activity_record(
                category=actions.CATEGORY,
                action=f"{action.name}_requested",
                user=request.user,
                entity_type="monitoring_action",
                entity_id=celery_id,
                metadata={"action": action.name, **{k: v for k, v in kwargs.items() if k != "parameters"}},
                request=request,
            )
        messages.success(request, f"{action.label} queued (job {celery_id}).")
        return HttpResponseRedirect(reverse("admin:monitoring_run", args=[celery_id]))

    def run_view(self, request, celery_id: str):
        self._require_view(request)
        run = JobRun.objects.filter(celery_id=celery_id).order_by("-started_at").first()
        return self._render(
            request,
            "run.html",
            "Action",
            {
                "celery_id": celery_id,
                "run": run,
                "result_json": json.dumps(run.result, indent=2, default=str) if run else "",
                "progress": connections.maintenance_progress(),
                "finished": run is not None and run.status not in (JobRun.Status.RUNNING, JobRun.Status.RETRYING),
            },
        )


def _exact_oid(request) -> int | None:
    """The object whose exact bloat a superuser asked for (it reads the whole relation)."""
    if request.GET.get("exact") and request.user.is_superuser:
        return _int(request.GET["exact"], "exact")
    return None


def _placeholders(query: str) -> int:
    found = [int(n) for n in actions._PARAMETER.findall(query)]
    return max(found, default=0)
