"""Attribute SQL to code: every statement carries a comment naming the view or job behind it.

    /* opsdeck:view=approvals.VersionViewSet.list */ SELECT ... /* opsdeck:view=approvals.VersionViewSet.list */
    /* opsdeck:job=approvals.run_automation */ UPDATE ... /* opsdeck:job=approvals.run_automation */

so pg_stat_statements, pg_stat_activity and the slow-query log can be grouped by origin
(`origin_of(text)` reads it back). The comment is written at both ends because each consumer
keeps a different end: PostgreSQL 18's pg_stat_statements stores a statement's text from its
first token, dropping a leading comment (checked on 18.6), while pg_stat_activity.query
(track_activity_query_size, 1 kB by default) and the slow-query log truncate long statements at
the end, dropping a trailing one.

How: one execute wrapper on every connection (installed like the slow-query logger, outermost so
the slow-query log sees the comment) adds the origin held in a ContextVar. The origin is set
- for requests by SqlOriginMiddleware.process_view (DRF viewsets: `<app>.<ViewSet>.<action>`,
  other class-based views `<app>.<View>.<method>`, admin `<app>.<ModelAdmin>.<view method>`,
  functions `<app>.<function>`), held until the response has gone through every middleware;
- for jobs by the job runner around the whole run, and for any other Celery task by the
  task_prerun/task_postrun signals (project/celery.py): `job=<task name>`.

Limits an operator should know:
- pg_stat_statements ignores comments (and column aliases) when computing queryid and keeps the
  text of the *first* execution it saw. A statement issued by two views is one entry there,
  shown with whichever view ran it first (and after pg_stat_statements_reset(), whichever runs it next). The origin
  in pg_stat_statements is therefore "one origin of this statement", not "the only one";
  pg_stat_activity.query and the slow-query log carry the exact origin of each execution.
- A ContextVar does not follow work into a new thread (threading.Thread starts with an empty
  context): queries from threads a view starts are unattributed unless it copies its context.
- In a string of several statements ("A; B") only the last one carries the trailing comment.
- `cursor.copy()` (COPY) goes to psycopg directly, not through execute wrappers: COPY statements
  carry no comment (and need none to work).
- psycopg prepares a statement after 5 executions of the same text per connection; the comment
  makes the text per origin, so a statement used by N views may be prepared N times (bounded by
  psycopg's prepared_max of 100 per connection).
"""

import inspect
import re
from contextlib import contextmanager
from contextvars import ContextVar

from django.apps import apps
from django.db.backends.signals import connection_created
from psycopg import sql as psycopg_sql

# Only characters that cannot end the comment or be read as a placeholder (`%`) by the driver.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")
_ORIGIN_COMMENT = re.compile(r"/\* opsdeck:((?:view|job)=[A-Za-z0-9_.:\-]+) \*/")
_origin: ContextVar[str | None] = ContextVar("sql_origin", default=None)


def _clean(name: str) -> str:
    return _UNSAFE.sub("_", name)[:200]


def current_origin() -> str | None:
    """`view=<name>` or `job=<name>` for the code running now, or None."""
    return _origin.get()


def _origin_text(view: str | None, job: str | None) -> str:
    if (view is None) == (job is None):
        raise ValueError("name exactly one of view= or job=")
    return f"view={_clean(view)}" if view is not None else f"job={_clean(job)}"


@contextmanager
def sql_origin(*, view: str | None = None, job: str | None = None):
    """Attribute every query in the block to a view or a job (the innermost block wins)."""
    token = _origin.set(_origin_text(view, job))
    try:
        yield
    finally:
        _origin.reset(token)


def set_origin(*, view: str | None = None, job: str | None = None):
    """Low-level: set the origin for what follows; returns a token for reset_origin (for code
    that has no block to wrap, such as Celery's task_prerun/task_postrun signal pair)."""
    return _origin.set(_origin_text(view, job))


def reset_origin(token) -> None:
    try:
        _origin.reset(token)
    except ValueError:  # the token belongs to another context: clear the origin instead
        _origin.set(None)


def comment_for(origin: str) -> str:
    return f"/* opsdeck:{origin} */"


def _attributed(text: str, comment: str) -> str:
    body = text.rstrip()
    semicolon = body.endswith(";")
    if semicolon:  # after a final ";" the trailing comment would be a statement of its own
        body = body[:-1].rstrip()
    # A "-- ..." on the last line would swallow a trailing comment on the same line.
    separator = "\n" if "--" in body.rsplit("\n", 1)[-1] else " "
    return f"{comment} {body}{separator}{comment}{';' if semicolon else ''}"


def origin_of(query_text: str | None) -> str | None:
    """Parse the origin back out of query text: 'view=app.View.action', 'job=name' or None."""
    if not query_text:
        return None
    match = _ORIGIN_COMMENT.search(query_text)
    return match.group(1) if match else None


def strip_origin(query_text: str) -> str:
    """The statement without Opsdeck's origin comments (for display, or matching its start)."""
    return _ORIGIN_COMMENT.sub("", query_text).strip()


def attribution_wrapper(execute, sql, params, many, context):
    origin = _origin.get()
    if origin is not None:
        comment = comment_for(origin)
        if isinstance(sql, str):
            sql = _attributed(sql, comment)
        elif isinstance(sql, bytes):
            sql = _attributed(sql.decode(), comment).encode()
        elif isinstance(sql, psycopg_sql.Composable):
            sql = psycopg_sql.SQL(comment + " ") + sql + psycopg_sql.SQL(" " + comment)
    return execute(sql, params, many, context)


def _install_on_connection(sender, connection, **kwargs):
    if attribution_wrapper not in connection.execute_wrappers:
        # Outermost, so inner wrappers (the slow-query log, tests' captures) see the comment.
        connection.execute_wrappers.insert(0, attribution_wrapper)


def install_sql_attribution() -> None:
    from django.db import connections

    connection_created.connect(_install_on_connection, dispatch_uid="opsdeck-sql-attribution")
    for connection in connections.all(initialized_only=True):
        _install_on_connection(None, connection)


# --- Views ------------------------------------------------------------------------------------


def _app_label(module: str) -> str:
    config = apps.get_containing_app_config(module)
    return config.label if config is not None else module.split(".")[0]


def view_name(view_func, method: str) -> str:
    """`<app>.<View>.<action>` for the view Django resolved this request to."""
    method = method.lower()
    cls = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
    if cls is not None:
        # DRF viewsets map the HTTP method to an action (list, retrieve, approve...); APIViews
        # and Django's class-based views dispatch on the method itself.
        actions = getattr(view_func, "actions", None) or {}
        action = actions.get(method, method)
        return f"{_app_label(cls.__module__)}.{cls.__name__}.{action}"
    model_admin = getattr(view_func, "model_admin", None)  # ModelAdmin.get_urls() marks its views
    if model_admin is not None:
        owner = type(model_admin)
        return f"{_app_label(owner.__module__)}.{owner.__name__}.{view_func.__name__}"
    # Unwrap decorators down to the view, stopping at a bound method (AdminSite.index): its
    # __wrapped__ would lead past the instance to the plain function.
    target = view_func
    while not inspect.ismethod(target) and getattr(target, "__wrapped__", None) is not None:
        target = target.__wrapped__
    if inspect.ismethod(target):
        owner = type(target.__self__)
        return f"{_app_label(owner.__module__)}.{owner.__name__}.{target.__name__}"
    module = getattr(target, "__module__", None) or "unknown"
    return f"{_app_label(module)}.{getattr(target, '__qualname__', getattr(target, '__name__', 'view'))}"


class SqlOriginMiddleware:
    """Attribute a request's queries to the view it resolved to (see the module docstring)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # Until process_view knows the view, the request's queries are unattributed; afterwards
        # the origin stays set through the response middleware (session save, for instance).
        token = _origin.set(None)
        try:
            return self.get_response(request)
        finally:
            _origin.reset(token)

    def process_view(self, request, view_func, view_args, view_kwargs):
        _origin.set(_origin_text(view_name(view_func, request.method or "get"), None))
