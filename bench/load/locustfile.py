"""Locust users for `make load`: one closed-loop scenario per run, chosen by LOAD_SCENARIO.

No Django here (locust patches with gevent; see ARCHITECTURE.md): everything a user needs
(token, session cookie, ids, a deep cursor) comes from the JSON file named by LOAD_CONFIG,
written by bench/load/run.py. Every non-2xx response is a failure named "HTTP <status>", so
locust's failures CSV counts errors by status.
"""

import json
import os
import random

from locust import FastHttpUser, constant, task

CONFIG = json.loads(open(os.environ["LOAD_CONFIG"]).read())  # noqa: SIM115 (read once at import)
SCENARIO = os.environ["LOAD_SCENARIO"]


class Endpoints:
    """One method per endpoint; each scenario is a weighted choice of these."""

    def __init__(self, user):
        self.user = user
        self.headers = {"Authorization": f"Token {CONFIG['token']}", "Accept-Encoding": "gzip, br"}

    def get(self, path: str, name: str, headers=None):
        with self.user.client.get(path, headers=headers or self.headers, name=name, catch_response=True) as r:
            if not 200 <= r.status_code < 300:
                r.failure(f"HTTP {r.status_code}")

    def task_list(self):
        self.get("/api/v1/tasks/", "task list")

    def filtered(self):
        self.get("/api/v1/tasks/?status=in_progress&priority=high", "filtered list")

    def cursor_deep(self):
        self.get(f"/api/v1/tasks/?cursor={CONFIG['deep_cursor']}", "cursor page ~10,000 deep")

    def search_common(self):
        self.get(f"/api/v1/tasks/?search={CONFIG['search']['common']}", "search common")

    def search_rare(self):
        self.get(f"/api/v1/tasks/?search={random.choice(CONFIG['search']['rare'])}", "search rare")

    def search_prefix(self):
        self.get(f"/api/v1/tasks/?search={CONFIG['search']['prefix']}", "search prefix")

    def detail(self):
        self.get(f"/api/v1/tasks/{random.randint(CONFIG['min_id'], CONFIG['max_id'])}/", "task detail")

    def stats(self):
        self.get(f"/api/v1/tasks/stats/?assignee={random.choice(CONFIG['assignees'])}", "tasks/stats (cached)")

    def create(self):
        body = {"project": random.choice(CONFIG["projects"]), "title": "load test task"}
        with self.user.client.post(
            "/api/v1/tasks/", json=body, headers=self.headers, name="task create", catch_response=True
        ) as r:
            if r.status_code != 201:
                r.failure(f"HTTP {r.status_code}")

    def admin_changelist(self):
        self.get("/admin/tasks/task/", "admin task changelist", headers=self.session_headers())

    def session_headers(self) -> dict:
        return {"Cookie": f"sessionid={CONFIG['session']}", "Accept-Encoding": "gzip, br"}

    # Approvals (seed 000) and reconciliation (seed 001): fixed paths chosen by run.py, whose SQL
    # the floor replays (bench/load/floor.py).
    def _replayed(self, name: str):
        self.get(CONFIG["replayed"][name]["path"], name)

    def versions_pending(self):
        self._replayed("versions_pending")

    def version_detail(self):
        self._replayed("version_detail")

    def pending_count(self):
        self._replayed("pending_count")

    def rules(self):
        self._replayed("rules")

    def recon_jobs(self):
        self._replayed("recon_jobs")

    def recon_job_detail(self):
        self._replayed("recon_job_detail")

    def recon_summary(self):
        self._replayed("recon_summary")

    def recon_matches(self):
        self._replayed("recon_matches")

    def recon_exceptions(self):
        self._replayed("recon_exceptions")

    def admin_versions(self):
        self.get("/admin/approvals/version/?status__exact=pending", "admin versions changelist", self.session_headers())

    def admin_executions(self):
        self.get("/admin/reconciliation/execution/", "admin executions changelist", self.session_headers())


# The seed 002 task mix: mostly reads of lists and single tasks, some writes and stats.
MIX_002 = {
    "task_list": 35,
    "filtered": 15,
    "cursor_deep": 10,
    "detail": 20,
    "search_common": 3,
    "search_rare": 2,
    "stats": 5,
    "create": 10,
}
# The seed 000 approvals mix: staff working the pending queue, the admin badge polling the count.
MIX_000 = {"versions_pending": 40, "version_detail": 25, "pending_count": 25, "rules": 10}
# The seed 001 reconciliation mix: job list, job, the run's summary, its matches and exceptions.
MIX_001 = {"recon_jobs": 20, "recon_job_detail": 15, "recon_summary": 30, "recon_matches": 20, "recon_exceptions": 15}
HELPERS = {"get", "session_headers"}
SCENARIOS = {name: {name: 1} for name in dir(Endpoints) if not name.startswith("_") and name not in HELPERS}
SCENARIOS.update(mix_002=MIX_002, mix_000=MIX_000, mix_001=MIX_001)


class ApiUser(FastHttpUser):
    wait_time = constant(0)  # closed loop: the next request leaves when the last one returned

    def on_start(self):
        self.endpoints = Endpoints(self)
        weights = SCENARIOS[SCENARIO]
        self.names = list(weights)
        self.weights = list(weights.values())

    @task
    def one_request(self):
        getattr(self.endpoints, random.choices(self.names, self.weights)[0])()
