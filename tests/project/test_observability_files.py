"""deploy/prometheus and deploy/grafana cannot run here (no Prometheus server, no Grafana): at least
every metric they query must be one Opsdeck exports, and the scrape config must match compose.
(`make alerts` runs promtool on the rules and their unit tests.)"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import django_prometheus
import pytest
import yaml

from project.poolstats import PoolStatsCollector

BASE_DIR = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = BASE_DIR / "deploy" / "prometheus"
DASHBOARD = BASE_DIR / "deploy" / "grafana" / "opsdeck.json"
CODE_DIRS = ("project", "tasks", "approvals", "reconciliation", "monitoring")
_DECLARED = re.compile(
    r"(?:Counter|Gauge|Histogram|Summary|GaugeMetricFamily|CounterMetricFamily|HistogramMetricFamily)\(\s*"
    r"\"([a-zA-Z_:][a-zA-Z0-9_:]*)\""
)
# Agreed in the interfaces note of 2026-11-23 (contracts.md) for the parts being built alongside:
# monitoring's scrape-time figures and reconciliation's business metrics.
CONTRACT_METRICS = {
    "opsdeck_celery_queue_depth",
    "opsdeck_db_cache_hit_ratio",
    "opsdeck_db_connections",
    "opsdeck_db_max_connections",
    "opsdeck_table_bloat_ratio",
    "opsdeck_partitions_ahead_months",
    "opsdeck_matview_staleness_seconds",
    "opsdeck_matview_refresh_every_seconds",
    "opsdeck_webhook_deliveries",
    "opsdeck_reconciliation_executions",
    "opsdeck_backlog_oldest_pending_age_seconds",
    "reconciliations_total",
    "reconciliation_duration_seconds",
    "reconciliation_match_rate",
    "records_ingested_total",
}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
SERIES_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported_metric_names() -> set[str]:
    """Names declared in Opsdeck's code, the pool collector's, the agreed ones, django-prometheus'."""
    names = set(PoolStatsCollector.GAUGES_BY_NAME) | CONTRACT_METRICS
    for directory in CODE_DIRS:
        for path in (BASE_DIR / directory).rglob("*.py"):
            names.update(_DECLARED.findall(path.read_text()))
    for path in Path(django_prometheus.__file__).parent.rglob("*.py"):
        names.update(re.findall(r"\"(django_[a-z_]+)\"", path.read_text()))
    return names


def metrics_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, groupings, ranges removed)."""
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\"[^\"]*\"", " ", expr)
    tokens = re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr)
    return {name for name, call in tokens if not call and name not in PROMQL_WORDS and "_" in name}


def is_exported(series: str, exported: set[str]) -> bool:
    if series in exported:
        return True
    return any(series.endswith(suffix) and series.removesuffix(suffix) in exported for suffix in SERIES_SUFFIXES)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_metrics_in_reads_metric_names_only():
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket{view=~"a.*"}[5m]))) > 0.5 '
        "and on (view) max without (instance) (y_ratio) > 2 * z_total"
    )
    assert metrics_in(expr) == {"x_seconds_bucket", "y_ratio", "z_total"}


def test_every_alert_reads_only_metrics_opsdeck_exports():
    exported = exported_metric_names()
    for rule in alert_rules():
        series = metrics_in(rule["expr"])
        assert series, rule["alert"]
        unknown = {name for name in series if not is_exported(name, exported)}
        assert not unknown, f"{rule['alert']} reads metrics nobody exports: {sorted(unknown)}"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_that_exists():
    operations = (BASE_DIR / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", operations, flags=re.MULTILINE)
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no section #{anchor}"


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet():
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    checks = [check for case in tests for check in case["alert_rule_test"]]
    for rule in alert_rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check["exp_alerts"] for check in mine), f"no test fires {rule['alert']}"
        assert any(not check["exp_alerts"] for check in mine), f"no test keeps {rule['alert']} quiet"


def test_prometheus_scrapes_what_compose_serves():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert config["rule_files"] == ["alerts.yml"]
    assert all(job["honor_labels"] is True for job in jobs.values())  # keeps opsdeck_job_runs_total{job}

    web = jobs["opsdeck-web"]
    assert web["static_configs"][0]["targets"] == ["web:8000"]
    assert "8000:8000" in services["web"]["ports"]
    assert "web" in compose["x-opsdeck-env"]["ALLOWED_HOSTS"]  # Django answers Host: web:8000
    assert "METRICS_TOKEN" in services["web"]["environment"]

    worker = jobs["opsdeck-worker"]
    assert worker["static_configs"][0]["targets"] == ["worker:9808"]
    assert services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9808"
    assert "9808" in services["worker"]["expose"]

    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    token_file = web["authorization"]["credentials_file"]
    assert f"> {token_file}" in prometheus["command"][0] and "METRICS_TOKEN" in prometheus["environment"]


def test_the_dashboard_reads_only_metrics_opsdeck_exports():
    exported = exported_metric_names()
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        unknown = {name for name in metrics_in(expr) if not is_exported(name, exported)}
        assert not unknown, f"dashboard query {expr!r} reads metrics nobody exports: {sorted(unknown)}"


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]

    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    [variable] = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"], variable["name"]) == ("datasource", "prometheus", "datasource")
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert [panel["title"] for panel in panels if panel["type"] == "row"] == ["API", "Business", "System"]
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (make alerts installs it)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses every expression of a rule file: the dashboard's queries become recording rules.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{number}", "expr": expr.replace("$__rate_interval", "5m")}
                    for number, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))

    promtool = shutil.which("promtool")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
