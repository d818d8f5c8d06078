"""`make fuzz`: schemathesis against a live `make run`-style stack, and a table of what it broke.

    python bench/fuzz.py [--max-time 300] [--workers 2] [--seed N] [--port 8931] [--no-save]

1. Starts `python -m project.devservices run` (web, worker, beat, embedded PostgreSQL and Redis)
   on its own port (FUZZ_PORT, default 8931) with its own data directory, var/fuzz/ (wiped at the
   start of every run, kept afterwards for its logs and reports), so a developer's `make run` and
   its data in var/ are never touched. The stack loads the demo data as `make run` does (tenant,
   job, records, tasks, versions), so the stateful phase follows links to real objects.
2. Raises the API throttles and the approval budgets for this stack only (FUZZ_STACK_ENV below;
   docs/testing.md), so a 429 never hides a code path.
3. Mints an API token for the superuser (`manage.py create_api_token`); the demo seed makes every
   superuser an admin of the demo tenant, and the run refuses to start if that is not so (every
   reconciliation endpoint would answer 403 and test nothing).
4. Runs schemathesis over every operation of /api/schema/: examples, coverage, fuzzing and stateful
   phases, checks not_a_server_error, status_code_conformance, response_schema_conformance, within
   --max-time seconds (fuzzing and stateful repeat until it is spent).
5. Reads schemathesis' NDJSON events and the stack's JSON log (a 500 carries X-Request-ID, the log
   line of its traceback has the same request_id), prints a table per operation, writes it to
   bench/results/fuzz-<timestamp>.txt, stops everything it started and exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = BASE_DIR / "bench" / "results"
RUN_DIR = BASE_DIR / "var" / "fuzz"
PYTHON = sys.executable
SCHEMATHESIS = str(Path(PYTHON).with_name("schemathesis"))
CHECKS = ("not_a_server_error", "status_code_conformance", "response_schema_conformance")
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# What each check's failures are called in the table.
COLUMN_OF_CHECK = {
    "not_a_server_error": "server errors",
    "response_schema_conformance": "schema violations",
    "status_code_conformance": "undocumented status",
}
SUPERUSER = "admin"
# The coverage phase also sends methods a path does not document (TRACE, PUT, ...): one row for all.
UNDOCUMENTED_METHODS = "(methods a documented path does not list)"
HIGH_RATE = "1000000/min"
# Test-only settings of the fuzzed stack: every rate limit out of the way (a 429 would end the case
# before the code under test runs). DEBUG stays whatever `make run` uses (the schema is the same
# either way; production mode would add a 2-minute compressing collectstatic to every run), and
# if it is off, plain HTTP on 127.0.0.1 must still work.
FUZZ_STACK_ENV = {
    "SECURE_SSL_REDIRECT": "false",
    "SESSION_COOKIE_SECURE": "false",
    "CSRF_COOKIE_SECURE": "false",
    "SECURE_HSTS_SECONDS": "0",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "THROTTLE_USER_RATE": HIGH_RATE,
    "THROTTLE_ANON_RATE": HIGH_RATE,
    "THROTTLE_BULK_RATE": HIGH_RATE,
    "THROTTLE_PENDING_COUNT_RATE": HIGH_RATE,
    "THROTTLE_EXPORT_RATE": HIGH_RATE,
    "APPROVALS_PER_MINUTE": "1000000",
    "REJECTIONS_PER_MINUTE": "1000000",
    "DJANGO_SUPERUSER_USERNAME": SUPERUSER,
}
STOP_TIMEOUT_S = 45
# The whole run (start, fuzz, stop, report) stays within --total-time: the stack's start-up (a
# migrate, the demo seed and, with DEBUG off, a compressing collectstatic: 1 minute on a quiet
# 2-core machine, 3.5 on a loaded one) is taken out of schemathesis' budget.
STOP_AND_REPORT_RESERVE_S = 60
SCHEMATHESIS_OVERRUN_S = 30  # it finishes the cases in flight and writes its reports after --max-time
MIN_FUZZ_S = 60


def log(message: str) -> None:
    print(f"[fuzz] {message}", flush=True)


# --- The stack ---------------------------------------------------------------------------------


class Stack:
    """`python -m project.devservices run` in its own session; stop() ends it and all it started."""

    def __init__(self, port: int, run_dir: Path):
        self.port = port
        self.run_dir = run_dir
        self.log_path = run_dir / "stack.log"
        self.env = {
            **os.environ,
            **FUZZ_STACK_ENV,
            "OPSDECK_VAR_DIR": str(run_dir / "var"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "SECRET_KEY": f"fuzz-{secrets.token_urlsafe(40)}",
            "DJANGO_SUPERUSER_PASSWORD": secrets.token_urlsafe(24),
            "DJANGO_SETTINGS_MODULE": "project.settings",
        }
        # A DATABASE_URL/REDIS_URL in the caller's environment would point the fuzzer at real data.
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "TASK_NOTIFY_WEBHOOK_URLS"):
            self.env.pop(name, None)
        self.process: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float) -> None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                raise SystemExit(f"port {self.port} is in use: set FUZZ_PORT or --port")
        self.log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "project.devservices", "run"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self._healthy():
            if self.process.poll() is not None:
                raise SystemExit(f"the stack exited with {self.process.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the stack did not answer /health in {timeout_s:.0f}s; see {self.log_path}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as response:  # noqa: S310 (our URL)
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def manage(self, *args: str) -> str:
        """A manage.py command against the stack's own PostgreSQL and Redis (devservices exec)."""
        result = subprocess.run(
            [PYTHON, "-m", "project.devservices", "exec", "--", PYTHON, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def get_json(self, path: str, token: str) -> tuple[int, object]:
        request = urllib.request.Request(  # noqa: S310 (our own http:// URL)
            f"{self.base_url}{path}", headers={"Authorization": f"Token {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (our URL)
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None

    def stop(self) -> None:
        """SIGTERM to the supervisor (it stops web, worker, beat, then PostgreSQL and Redis)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log("the stack did not stop in time; killing its process group")
        # Whatever is left in its session (a child that ignored SIGTERM) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        self.log_file.close()


# --- schemathesis ------------------------------------------------------------------------------


def schemathesis_command(args, base_url: str, token: str, report_dir: Path) -> list[str]:
    return [
        SCHEMATHESIS,
        "run",
        f"{base_url}/api/schema/?format=json",
        "--header",
        f"Authorization: Token {token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--max-time",
        str(args.fuzz_time),
        "--max-examples",
        str(args.max_examples),
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
        # Every failing case of an operation, not only the first: the table counts them all.
        "--continue-on-failure",
        "--request-timeout",
        "65",  # gunicorn's --timeout is 60 s: a slower answer is the server's verdict, not ours
        "--generation-database",
        "none",
        "--report",
        "json,ndjson",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]


def run_schemathesis(command: list[str], run_dir: Path, budget_s: int) -> int:
    """Run it in its own session (so a timeout kills its workers too); its console output goes to a file."""
    output_path = run_dir / "schemathesis.log"
    with output_path.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=run_dir, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            log(f"schemathesis still running after {budget_s}s; stopping it")
            return -1
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


# --- Reading the results -----------------------------------------------------------------------


@dataclass
class Failure:
    operation: str
    check: str
    status: int | None
    message: str
    phase: str
    request: str
    traceback: str
    count: int = 0


@dataclass
class RunError:
    """A case schemathesis could not finish: the API's fault when the request itself failed."""

    label: str
    phase: str
    kind: str
    message: str
    fatal: bool

    @property
    def api_fault(self) -> bool:
        # A timeout or a dropped connection is the server's doing; anything else (a SystemError
        # inside the generator, say) is the tool's, reported but not held against the API.
        return self.fatal or any(word in self.kind for word in ("Timeout", "Connection", "Chunked", "Disconnect"))


@dataclass
class OperationStats:
    cases: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)


def _decode(body) -> str:
    if isinstance(body, dict) and "$base64" in body:
        return base64.b64decode(body["$base64"]).decode("utf-8", "replace")
    return "" if body is None else str(body)


def _clip(text: str, limit: int) -> str:
    # Fuzzed inputs carry control characters and lone surrogates: print them escaped.
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _request_summary(interaction: dict | None, case: dict) -> str:
    if interaction is None:
        return f"{case.get('method')} {case.get('path')}"
    request = interaction["request"]
    uri = re.sub(r"^https?://[^/]+", "", request["uri"])
    content_type = (request.get("headers") or {}).get("Content-Type", [""])[0]
    body = _decode(request.get("body"))
    text = f"{request['method']} {_clip(uri, 300)}"
    if body or content_type:
        text += f"  [{content_type or 'no content type'}] {_clip(body, 300) if body else '(empty body)'}"
    return text


def tracebacks_by_request_id(stack_log: Path) -> dict[str, str]:
    """request_id → 'Error: message (at file:line in function)' from the stack's JSON log lines."""
    found = {}
    with stack_log.open("rb") as lines:
        for raw in lines:
            if b'"exc"' not in raw or b'"request_id"' not in raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("request_id") and record.get("exc") and record["request_id"] not in found:
                found[record["request_id"]] = summarize_traceback(record["exc"])
    return found


# Frames every query or request passes through: the frame that says where a failure happened is
# the innermost one outside them.
PLUMBING = ("project/db/", "project/middleware.py", "project/logging.py", "project/api/errors.py")


def summarize_traceback(text: str) -> str:
    """'DataError: message (at app/file.py:line in function)' of the last exception in a traceback."""
    exception_lines = [
        line for line in text.splitlines() if re.match(r"[A-Za-z_][\w.]*(: |$)", line) and line != "Traceback"
    ]
    last_line = exception_lines[-1] if exception_lines else text.strip().splitlines()[-1]
    our_frames = [
        (Path(path).relative_to(BASE_DIR).as_posix(), line, function)
        for path, line, function in re.findall(r'File "([^"]+)", line (\d+), in (\S+)', text)
        if path.startswith(f"{BASE_DIR}/") and "/.venv/" not in path and "site-packages" not in path
    ]
    telling = [frame for frame in our_frames if not frame[0].startswith(PLUMBING)] or our_frames
    where = ""
    if telling:
        path, line, function = telling[-1]
        where = f" (at {path}:{line} in {function})"
    return _clip(last_line, 200) + where


def schema_operation_labels(schema: dict) -> list[str]:
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return [
        f"{method.upper()} {path}" for path, item in schema["paths"].items() for method in item if method in methods
    ]


def misrouted_request(operation: str, phase: str, interaction: dict) -> RunError:
    uri = re.sub(r"^https?://[^/]+", "", interaction["request"]["uri"])
    return RunError(
        label=operation,
        phase=phase,
        kind="MisroutedRequest",
        message=_clip(f"the client sent it to {uri}, another route; its checks do not apply", 300),
        fatal=False,
    )


def reached_its_route(path_template: str, interaction: dict | None) -> bool:
    """Whether the request went to the operation's own path: a path parameter of "." or ".." is a
    dot segment the HTTP client removes (RFC 3986), so `GET /atoms/{id}/` with id "." is sent as
    `GET /atoms/` and checked against the detail schema. That is the tool's artifact, not the API's."""
    if interaction is None:
        return True
    path = urllib.parse.urlsplit(interaction["request"]["uri"]).path
    pattern = "".join(
        "[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]+\})", path_template)
    )
    return re.fullmatch(pattern, path) is not None


def read_events(ndjson_path: Path, tracebacks: dict[str, str], schema_operations: list[str]):
    operations: dict[str, OperationStats] = {label: OperationStats() for label in schema_operations}
    operations[UNDOCUMENTED_METHODS] = OperationStats()
    failures: dict[tuple, Failure] = {}
    cases_per_phase = collections.Counter()
    errors: list[RunError] = []
    with ndjson_path.open("rb") as lines:
        for raw in lines:
            if raw.startswith((b'{"NonFatalError"', b'{"FatalError"')):
                kind, event = next(iter(json.loads(raw).items()))
                value = event.get("value") or {}
                errors.append(
                    RunError(
                        label=event.get("label") or kind,
                        phase=event.get("phase") or "",
                        kind=value.get("type", kind),
                        message=_clip(value.get("message", ""), 300),
                        fatal=kind == "FatalError",
                    )
                )
                continue
            if not raw.startswith(b'{"ScenarioFinished"'):
                continue
            event = json.loads(raw)["ScenarioFinished"]
            recorder = event["recorder"]
            cases = recorder.get("cases", {})
            cases_per_phase[event["phase"]] += len(cases)
            checks = recorder.get("checks", {})
            interactions = recorder.get("interactions", {})
            for case_id, node in cases.items():
                case = node["value"]
                operation = f"{case['method']} {case['path']}"
                stats = operations[operation if operation in schema_operations else UNDOCUMENTED_METHODS]
                stats.cases += 1
                for check in checks.get(case_id, []):
                    if check["status"] != "failure":
                        continue
                    interaction = interactions.get(case_id)
                    response = (interaction or {}).get("response") or {}
                    status = response.get("status_code")
                    if check["name"] == "status_code_conformance" and status and status >= 500:
                        continue  # counted once, as a server error
                    if check["name"] != "not_a_server_error" and not reached_its_route(case["path"], interaction):
                        errors.append(misrouted_request(operation, event["phase"], interaction))
                        continue
                    stats.failures[check["name"]] += 1
                    message = (check.get("failure_info") or {}).get("failure", {}).get("message", "")
                    # One line per kind of failure: a schema violation is told apart by its message.
                    kind = message.splitlines()[0] if check["name"] == "response_schema_conformance" else ""
                    key = (operation, check["name"], status, kind)
                    if key not in failures:
                        request_id = (response.get("headers") or {}).get("x-request-id", [""])[0]
                        traceback = tracebacks.get(request_id, "")
                        if status and status >= 500 and not traceback:
                            traceback = "no traceback logged for its request id (see var/fuzz/stack.log)"
                        failures[key] = Failure(
                            operation=operation,
                            check=check["name"],
                            status=status,
                            message=_clip(message, 300),
                            phase=event["phase"],
                            request=_request_summary(interaction, case),
                            traceback=traceback,
                        )
                    failures[key].count += 1
    return operations, failures, cases_per_phase, errors


def render(args, report: dict, operations, failures, cases_per_phase, errors, duration_s, exit_code: int) -> str:
    total_operations = len(operations) - 1
    tested = sum(1 for label, stats in operations.items() if stats.cases and label != UNDOCUMENTED_METHODS)
    columns = ["server errors", "schema violations", "undocumented status"]
    api_errors = sum(1 for error in errors if error.api_fault)
    totals = collections.Counter()
    rows = []
    for operation in sorted(operations, key=lambda label: (label == UNDOCUMENTED_METHODS, label.split(" ")[-1], label)):
        stats = operations[operation]
        counts = {COLUMN_OF_CHECK[name]: count for name, count in stats.failures.items()}
        totals["cases"] += stats.cases
        for column in columns:
            totals[column] += counts.get(column, 0)
        rows.append((operation, stats.cases, *(counts.get(column, 0) for column in columns)))
    width = max([len("operation"), *(len(row[0]) for row in rows)])
    header = f"{'operation':<{width}}  {'cases':>7}  " + "  ".join(f"{column:>19}" for column in columns)
    lines = [
        f"# make fuzz (bench/fuzz.py --max-time {args.max_time} --total-time {args.total_time} "
        f"--max-examples {args.max_examples} "
        f"--workers {args.workers} --seed {args.seed}), schemathesis {report.get('schemathesis_version', '?')}, "
        f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} CPUs",
        f"# commit {git_describe()}; finished {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
        + (f"whole run {duration_s:.0f} s (stack start, fuzzing, stop)" if duration_s else "re-read from var/fuzz/")
        + "; schemathesis stopped by "
        f"{report.get('stop_reason', '?')} after {report.get('running_time', 0):.0f} s",
        f"# checks: {', '.join(CHECKS)}",
        "# phases: "
        + ", ".join(
            f"{phase} {(report.get('phases', {}).get(phase) or {}).get('status', '?')} ({cases_per_phase[phase]} cases)"
            for phase in PHASES
        ),
        "",
        f"operations: {total_operations} in the schema, {tested} tested"
        f"  |  cases: {totals['cases']}  |  server errors: {totals['server errors']}"
        f"  |  schema violations: {totals['schema violations']}  |  undocumented status codes: "
        f"{totals['undocumented status']}  |  distinct failures: {len(failures)}  |  errors: {api_errors}",
        "",
        header,
        "-" * len(header),
    ]
    lines += [
        f"{name:<{width}}  {cases:>7}  " + "  ".join(f"{value:>19}" for value in values)
        for name, cases, *values in rows
    ]
    lines += [
        "-" * len(header),
        f"{'total':<{width}}  {totals['cases']:>7}  " + "  ".join(f"{totals[column]:>19}" for column in columns),
    ]
    if failures:
        lines += [
            "",
            f"Distinct failures ({len(failures)}): operation, check, status, cases, first input, server traceback",
        ]
        for failure in sorted(failures.values(), key=lambda f: (f.check != "not_a_server_error", f.operation)):
            lines.append(
                f"- {failure.operation} | {COLUMN_OF_CHECK[failure.check]} | {failure.status} | "
                f"{failure.count} case(s) | phase {failure.phase}"
            )
            lines.append(f"    input: {failure.request}")
            if failure.message:
                lines.append(f"    schemathesis: {failure.message}")
            if failure.traceback:
                lines.append(f"    server: {failure.traceback}")
    if errors:
        lines += ["", f"Errors ({len(errors)}): cases schemathesis could not complete"]
        lines += [
            f"- {error.label} | phase {error.phase} | {error.kind}: {error.message}"
            + ("" if error.api_fault else "  (a tool error, not counted against the API)")
            for error in errors[:50]
        ]
    verdict = "PASS" if exit_code == 0 else "FAIL"
    lines += [
        "",
        f"{verdict}: {totals['server errors']} server errors, {totals['schema violations']} schema "
        f"violations, {totals['undocumented status']} undocumented status codes, {api_errors} errors",
    ]
    return "\n".join(lines) + "\n"


def git_describe() -> str:
    result = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],  # noqa: S607 (git from PATH, as make does)
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


# --- Main --------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--max-time",
        type=int,
        default=int(os.environ.get("FUZZ_MAX_TIME_S", "300")),
        help="schemathesis' time budget in seconds (FUZZ_MAX_TIME_S, default 300)",
    )
    parser.add_argument(
        "--total-time",
        type=int,
        default=int(os.environ.get("FUZZ_TOTAL_TIME_S", "570")),
        help="bound of the whole run, start-up and stop included; fuzzing gets what start-up leaves, "
        "at most --max-time (FUZZ_TOTAL_TIME_S, default 570)",
    )
    parser.add_argument("--max-examples", type=int, default=50, help="cases per operation in one fuzzing round")
    parser.add_argument("--workers", type=int, default=2, help="concurrent schemathesis workers")
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ.get("FUZZ_SEED", "9")),
        help="schemathesis' seed (FUZZ_SEED; the same seed replays the same first cases)",
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("FUZZ_PORT", "8931")))
    parser.add_argument("--no-save", action="store_true", help="print the table without writing bench/results/")
    parser.add_argument("--report-only", action="store_true", help="only re-read the last run's files in var/fuzz/")
    return parser.parse_args(argv)


def fuzz(args) -> tuple[int, float]:
    """Start the stack, run schemathesis against it, stop the stack: (schemathesis' exit, seconds)."""
    started = time.monotonic()
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    stack = Stack(args.port, RUN_DIR)
    try:
        log(f"starting the stack on {stack.base_url} (data and logs in {RUN_DIR.relative_to(BASE_DIR)}/)")
        stack.start(timeout_s=args.total_time - STOP_AND_REPORT_RESERVE_S - SCHEMATHESIS_OVERRUN_S - MIN_FUZZ_S)
        log(f"stack up in {time.monotonic() - started:.0f}s")
        token = stack.manage("create_api_token", SUPERUSER).strip().splitlines()[-1]
        status, tenants = stack.get_json("/api/v1/reconciliations/tenants/", token)
        if status != 200 or not (tenants or {}).get("results"):
            raise SystemExit(f"the fuzzing user belongs to no tenant ({status}): reconciliation would only answer 403")
        status, schema = stack.get_json("/api/schema/?format=json", token)
        (RUN_DIR / "schema.json").write_text(json.dumps(schema))
        left_s = args.total_time - (time.monotonic() - started) - STOP_AND_REPORT_RESERVE_S - SCHEMATHESIS_OVERRUN_S
        args.fuzz_time = max(MIN_FUZZ_S, min(args.max_time, int(left_s)))
        if args.fuzz_time < args.max_time:
            log(f"the start-up took long: {args.fuzz_time}s of fuzzing instead of {args.max_time}s")
        command = schemathesis_command(args, stack.base_url, token, RUN_DIR / "report")
        log(f"schemathesis over every operation for {args.fuzz_time}s (output in var/fuzz/schemathesis.log)")
        st_exit = run_schemathesis(command, RUN_DIR, budget_s=args.fuzz_time + SCHEMATHESIS_OVERRUN_S)
    finally:
        log("stopping the stack")
        stack.stop()
    return st_exit, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop_on_signal(signum, frame):
        raise KeyboardInterrupt  # the `finally` of fuzz() stops the stack

    signal.signal(signal.SIGTERM, stop_on_signal)
    if args.report_only:
        st_exit, duration_s = 0, None
    else:
        st_exit, duration_s = fuzz(args)
    reports = sorted((RUN_DIR / "report").glob("json-*.json"))
    events = sorted((RUN_DIR / "report").glob("ndjson-*.ndjson"))
    if not reports or not events:
        log(f"schemathesis wrote no report (exit {st_exit}); see var/fuzz/schemathesis.log")
        return 2
    report = json.loads(reports[-1].read_text())
    schema = json.loads((RUN_DIR / "schema.json").read_text())
    operations, failures, cases_per_phase, errors = read_events(
        events[-1], tracebacks_by_request_id(RUN_DIR / "stack.log"), schema_operation_labels(schema)
    )
    # schemathesis exits 1 for failures and for its own errors alike: decide from what it recorded.
    failed = (
        st_exit not in (0, 1)
        or any(error.api_fault for error in errors)
        or any(stats.failures for stats in operations.values())
    )
    exit_code = 1 if failed else 0
    text = render(args, report, operations, failures, cases_per_phase, errors, duration_s, exit_code)
    print(text, end="")
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        target = RESULTS_DIR / f"fuzz-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.txt"
        target.write_text(text)
        log(f"written to {target.relative_to(BASE_DIR)}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
