"""The steady mixed load of `make chaos`, and the local webhook receiver it checks deliveries with.

Every request is recorded (kind, start, end, status or transport error) so each fault can be judged
on the requests that overlapped it; every write the server acknowledged with a 2xx is kept (task id
and title, record external id) so the harness can check afterwards, in the database, that it exists.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

CLIENT_TIMEOUT_S = 40  # longer than any stall a fault causes: a hang is measured, not cut short


@dataclass(frozen=True)
class Request:
    kind: str  # read, create, ingest, run, health
    started: float  # time.time()
    ended: float
    status: int | None  # None: no HTTP answer (see error)
    error: str = ""  # the transport error's class, or the start of a non-2xx body

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def duration_s(self) -> float:
        return self.ended - self.started


@dataclass
class AckedTask:
    id: int
    title: str
    acked_at: float
    started: float


@dataclass
class Load:
    base_url: str
    token: str
    project_id: int
    load_job_id: int
    requests: list[Request] = field(default_factory=list)
    acked_tasks: dict[int, AckedTask] = field(default_factory=dict)
    refused_tasks: list[tuple[str, Request]] = field(default_factory=list)  # (title, the request)
    acked_records: dict[str, float] = field(default_factory=dict)  # external_id -> acked at
    inflight: dict[str, float] = field(default_factory=dict)  # thread name -> request start

    def __post_init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._record_seq = 0

    # --- plumbing --------------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Token {self.token}"},
            timeout=CLIENT_TIMEOUT_S,
        )

    def call(
        self, client: httpx.Client, kind: str, method: str, url: str, **kwargs
    ) -> tuple[Request, httpx.Response | None]:
        name = threading.current_thread().name
        started = time.time()
        with self._lock:
            self.inflight[name] = started
        response = None
        try:
            response = client.request(method, url, **kwargs)
            # What a refusal said is evidence; a 2xx body is not kept.
            detail = "" if response.is_success else response.text[:200]
            request = Request(kind, started, time.time(), response.status_code, detail)
        except httpx.HTTPError as error:
            request = Request(kind, started, time.time(), None, type(error).__name__)
        with self._lock:
            self.inflight.pop(name, None)
            self.requests.append(request)
        return request, response

    def start(self) -> None:
        loops = [
            ("read-1", self._reader, 0.05),
            ("read-2", self._reader, 0.05),
            ("create", self._task_creator, 0.1),
            ("ingest", self._record_ingester, 0.2),
            ("health", self._health_prober, 0.25),
        ]
        for name, body, pause_s in loops:
            thread = threading.Thread(target=self._loop, args=(body, pause_s), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)

    def _loop(self, body, pause_s: float) -> None:
        with self.client() as client:
            while not self._stop.is_set():
                body(client)
                self._stop.wait(pause_s)

    def wait_settled(self, since: float, timeout_s: float = CLIENT_TIMEOUT_S + 5) -> None:
        """Wait until no load request that started before `since` is still waiting for its answer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(started >= since for started in self.inflight.values()):
                    return
            time.sleep(0.1)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    # --- the mix ---------------------------------------------------------------------------------

    def _reader(self, client: httpx.Client) -> None:
        with self._lock:
            ids = list(self.acked_tasks)
        if ids and random.random() < 0.5:
            self.call(client, "read", "GET", f"/api/v1/tasks/{random.choice(ids)}/")
        else:
            self.call(client, "read", "GET", "/api/v1/tasks/", params={"page_size": 20})

    def _task_creator(self, client: httpx.Client) -> None:
        title = f"chaos {uuid.uuid4().hex}"
        request, response = self.call(
            client, "create", "POST", "/api/v1/tasks/", json={"project": self.project_id, "title": title}
        )
        with self._lock:
            if request.ok:
                task_id = response.json()["id"]
                self.acked_tasks[task_id] = AckedTask(task_id, title, request.ended, request.started)
            else:
                self.refused_tasks.append((title, request))

    def _record_ingester(self, client: httpx.Client) -> None:
        with self._lock:
            self._record_seq += 1
            external_id = f"LOAD-{self._record_seq:07d}-{uuid.uuid4().hex[:8]}"
        row = {"external_id": external_id, "amount": "12.34", "currency": "EUR", "booked_on": "2026-01-15"}
        request, _ = self.call(
            client, "ingest", "POST", f"/api/v1/reconciliations/jobs/{self.load_job_id}/records/?side=left", json=[row]
        )
        if request.ok:
            with self._lock:
                self.acked_records[external_id] = request.ended

    def _health_prober(self, client: httpx.Client) -> None:
        self.call(client, "health", "GET", "/health")


# --- webhook receiver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    received_at: float
    event: str
    task_ids: tuple[int, ...]
    idempotency_key: str


def task_ids_of(body) -> tuple[int, ...]:
    """Task ids of a delivery, whatever shape the payload takes ({"tasks": [{"id"}]}, "task_ids", ...)."""
    if not isinstance(body, dict):
        return ()
    ids: list[int] = []
    for item in body.get("tasks") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), int):
            ids.append(item["id"])
    for key in ("task_ids", "ids"):
        ids.extend(i for i in body.get(key) or [] if isinstance(i, int))
    for key in ("task", "data"):
        if isinstance(body.get(key), dict) and isinstance(body[key].get("id"), int):
            ids.append(body[key]["id"])
    if isinstance(body.get("task_id"), int):
        ids.append(body["task_id"])
    return tuple(sorted(set(ids)))


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every delivery and answers 200."""

    def __init__(self):
        self.deliveries: list[Delivery] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body_raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(body_raw)
                except ValueError:
                    body = {}
                key = next(
                    (value for name, value in self.headers.items() if "idempotency" in name.lower()),
                    (body.get("idempotency_key") or body.get("event_id") or "") if isinstance(body, dict) else "",
                )
                event = str(body.get("event") or body.get("type") or "") if isinstance(body, dict) else ""
                with lock:
                    receiver.deliveries.append(Delivery(time.time(), event, task_ids_of(body), str(key)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def created_deliveries(self) -> dict[int, list[Delivery]]:
        """task id -> its `task.created` deliveries."""
        by_task: dict[int, list[Delivery]] = {}
        for delivery in list(self.deliveries):
            if delivery.event.endswith("created"):
                for task_id in delivery.task_ids:
                    by_task.setdefault(task_id, []).append(delivery)
        return by_task
