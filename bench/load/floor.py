"""The raw floor: the task API's SQL served by a minimal WSGI app (no Django), for `make load`.

    gunicorn bench.load.floor:app --workers 2       # FLOOR_DATABASE_URL, FLOOR_REDIS_SOCKET set

Same gunicorn, same worker count, same PostgreSQL and Redis as Opsdeck, and for each endpoint
the statement Opsdeck runs for it (page of 51 rows ordered by (created_at, id) with the row
comparison seek, the status/priority filter, the bounded ranked search, the detail by id, the
INSERT of a create) through a psycopg pool, rendered with orjson. A cache hit is a Redis GET.
Approvals and reconciliation scenarios replay the statements Opsdeck ran for the same request
(captured by run.py). What it leaves out is what the ratio measures: Django, DRF, auth, throttles,
middleware.
"""

import base64
import json
import os
from urllib.parse import parse_qs

import orjson
import redis
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

COLUMNS = (
    "id, project_id AS project, title, description, assignee_id AS assignee, status, priority, deadline, tags,"
    " created_at, updated_at, completed_at"
)
PAGE_SIZE = 50
SEARCH_CANDIDATES = int(os.environ.get("TASK_SEARCH_CANDIDATES_MAX", "1000"))
SEARCH_RECENT_WINDOW = int(os.environ.get("TASK_SEARCH_RECENT_WINDOW", "20000"))

pool = ConnectionPool(
    os.environ["FLOOR_DATABASE_URL"],
    min_size=2,
    max_size=int(os.environ.get("DB_POOL_MAX_SIZE", "10")),
    kwargs={"row_factory": dict_row, "autocommit": True},
    open=False,
)
cache = redis.Redis(unix_socket_path=os.environ["FLOOR_REDIS_SOCKET"]) if os.environ.get("FLOOR_REDIS_SOCKET") else None
_opened = False


def _json(start_response, status: str, body) -> list[bytes]:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def _cursor(row: dict) -> str:
    raw = json.dumps(["n", row["created_at"].isoformat(), str(row["id"])], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _task_list(query: dict) -> dict:
    where, params = [], []
    for name in ("status", "priority"):
        if name in query:
            where.append(f"{name} = ANY(%s)")
            params.append(query[name])
    if "cursor" in query:
        raw = query["cursor"][0]
        _, created_at, task_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        where.append("(created_at, id) < (%s::timestamptz, %s::bigint)")
        params += [created_at, int(task_id)]
    sql = f"SELECT {COLUMNS} FROM tasks_task"
    if "search" in query:
        text = query["search"][0]
        # A trailing * is a prefix, as in Opsdeck (tasks.selectors.task_search_query).
        tsquery, text = ("to_tsquery", f"{text[:-1]}:*") if text.endswith("*") else ("websearch_to_tsquery", text)
        # As tasks.selectors.task_search: the newest matches within the recent window (primary key
        # walked backwards), and the GIN index's first matches only when the window holds too few.
        recent = (
            f"SELECT id FROM tasks_task WHERE id > (SELECT max(id) FROM tasks_task) - {SEARCH_RECENT_WINDOW}"
            f" AND search_vector @@ {tsquery}('english', %s) ORDER BY id DESC LIMIT {SEARCH_CANDIDATES}"
        )
        indexed = f"SELECT id FROM tasks_task WHERE search_vector @@ {tsquery}('english', %s) LIMIT {SEARCH_CANDIDATES}"
        ranked = (
            f"SELECT {COLUMNS}, ts_rank(search_vector, {tsquery}('english', %s))::float8 AS rank"
            " FROM tasks_task WHERE {candidates} ORDER BY rank DESC, id DESC LIMIT " + str(PAGE_SIZE + 1)
        )
        with pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
            newest = [row["id"] for row in conn.execute(recent, [text]).fetchall()]
            conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = on")
            if len(newest) < SEARCH_CANDIDATES:
                candidates = f"id IN (SELECT unnest(%s::bigint[]) UNION ({indexed}))"
                sql, params = ranked.format(candidates=candidates), [text, newest, text]
            else:
                sql, params = ranked.format(candidates="id = ANY(%s::bigint[])"), [text, newest]
            rows = conn.execute(sql, params).fetchall()
        for row in rows:
            row.pop("rank")
    else:
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at DESC, id DESC LIMIT {PAGE_SIZE + 1}"
        with pool.connection() as conn:
            rows = conn.execute(sql, params).fetchall()
    page = rows[:PAGE_SIZE]
    return {"results": page, "next": _cursor(page[-1]) if len(rows) > PAGE_SIZE else None, "previous": None}


# Approvals and reconciliation: the statements Opsdeck ran for each scenario's request, captured
# by run.py (bench/load/run.py replayed_requests), replayed in one transaction; none means the
# answer was a cache hit, served here as a Redis GET of the body run.py stored.
REPLAYED = {
    entry["path"]: (name, entry["sql"])
    for name, entry in (
        json.loads(open(os.environ["FLOOR_REPLAY"]).read())["replayed"].items()  # noqa: SIM115
        if os.environ.get("FLOOR_REPLAY")
        else []
    )
}


def _replay(start_response, name: str, statements: list[str]) -> list[bytes]:
    if not statements:
        return _json(start_response, "200 OK", (cache.get(f"floor:replay:{name}") if cache else None) or b"{}")
    rows = []
    with pool.connection() as conn, conn.transaction():
        for statement in statements:
            cursor = conn.execute(statement)  # interpolated by Django: no placeholders left
            rows = cursor.fetchall() if cursor.description else rows
    return _json(start_response, "200 OK", {"results": rows})


def app(environ, start_response):
    global _opened
    if not _opened:  # after gunicorn's fork: each worker its own pool
        pool.open(wait=True)
        _opened = True
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    query_string = environ.get("QUERY_STRING", "")
    if (replayed := REPLAYED.get(f"{path}?{query_string}" if query_string else path)) and method == "GET":
        return _replay(start_response, *replayed)
    query = parse_qs(query_string)
    if path == "/api/v1/tasks/" and method == "GET":
        return _json(start_response, "200 OK", _task_list(query))
    if path == "/api/v1/tasks/" and method == "POST":
        body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
        with pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO tasks_task (project_id, title, description, status, priority, tags, created_at,"
                f" updated_at) VALUES (%s, %s, '', 'todo', 'medium', '[]', now(), now()) RETURNING {COLUMNS}",
                [body["project"], body["title"]],
            ).fetchone()
        return _json(start_response, "201 Created", row)
    if path == "/api/v1/tasks/stats/" and cache is not None:
        cached = cache.get(f"floor:stats:{query.get('assignee', ['0'])[0]}")
        return _json(start_response, "200 OK", cached or b"{}")
    if path.startswith("/api/v1/tasks/") and path.count("/") == 5:
        with pool.connection() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM tasks_task WHERE id = %s", [int(path.split("/")[4])]).fetchone()
        return _json(start_response, "200 OK", row) if row else _json(start_response, "404 Not Found", {})
    return _json(start_response, "404 Not Found", {"error": "not served by the floor"})
