"""The report's recommendations are a table of rules (monitoring/recommendations.py): each rule
cites its source and threshold settings, fires on the figures past its threshold and stays quiet
below it. Each case below is (rule, inputs that fire it, inputs that keep it quiet)."""

from datetime import datetime

import pytest
from django.conf import settings as django_settings

from monitoring import key_figures
from monitoring import recommendations as rules_module
from monitoring.recommendations import RULES, Inputs, recommendations

SINCE = datetime(2026, 11, 1)


@pytest.fixture(autouse=True)
def samples(monkeypatch):
    """The last minute's p95 and error rate come from MetricSample rows: given here instead."""
    values: dict[str, float] = {}
    monkeypatch.setattr(key_figures, "latest_sample", values.get)
    return values


def indexes(flags=(), missing=()) -> dict:
    rows = [{"name": "ix_a", "flags": list(flags), "size_bytes": 2 * 1048576}]
    return {"indexes": rows, "stats_since": SINCE, "missing_index_tables": [{"name": t} for t in missing]}


def connections(usage=0.1, long_running=False, idle=()) -> dict:
    return {
        "connections": {
            "usage_ratio": usage,
            "client_connections": int(usage * 100),
            "max_connections": 100,
            "longest_queries": [{"long_running": long_running}],
            "long_query_threshold_s": 60,
            "idle_in_transaction": list(idle),
        }
    }


def reconciliation(stuck=0, dead=0) -> dict:
    return {
        "reconciliation": {"executions": {"stuck": {"count": stuck}}, "webhook_deliveries": {"dead": {"count": dead}}}
    }


def pools(ratio) -> dict:
    return {"pools": {"available": True, "totals": {"max_usage_ratio": ratio}}}


def queues(depth) -> dict:
    return {"queues": {"available": True, "queues": [{"name": "default", "depth": depth}]}}


def table(dead_ratio, dead_rows) -> dict:
    return {"tables": [{"name": "tasks_task", "dead_ratio": dead_ratio, "dead_rows": dead_rows}]}


def partitions(status) -> dict:
    return {"partitions": [{"name": "activity", "status": status, "months_ahead": 0, "default_rows": 3}]}


def statements(available=True, slow=False) -> dict:
    return {"available": available, "message": "Enable pg_stat_statements.", "statements": [{"slow": slow}]}


def sequence(near) -> list:
    return [{"name": "tasks_task_id_seq", "used_ratio": 0.95 if near else 0.1, "column_type": "integer",
             "near_overflow": near}]  # fmt: skip


# rule: (fires, quiet); an Inputs, or a (figures, samples) pair for the two sampled figures.
CASES = {
    "pool_usage": (Inputs(pools(0.9)), Inputs(pools(0.5))),
    "cache_hit_table": (Inputs({"cache_hit": {"table": 0.95}}), Inputs({"cache_hit": {"table": 0.995}})),
    "cache_hit_index": (Inputs({"cache_hit": {"index": 0.9}}), Inputs({"cache_hit": {"index": 0.999}})),
    "query_p95_ms": (({}, {"db.query_p95_ms": 150.0}), ({}, {"db.query_p95_ms": 40.0})),
    "pending_backlog": (Inputs({"approvals": {"count": 30}}), Inputs({"approvals": {"count": 5}})),
    "queue_depth": (Inputs(queues(2000)), Inputs(queues(10))),
    "error_rate": (({}, {"http.error_rate": 0.05}), ({}, {"http.error_rate": 0.001})),
    "invalid_indexes": (Inputs({}, indexes=indexes(["invalid"])), Inputs({}, indexes=indexes())),
    "duplicate_indexes": (Inputs({}, indexes=indexes(["duplicate"])), Inputs({}, indexes=indexes())),
    "unused_indexes": (Inputs({}, indexes=indexes(["unused"])), Inputs({}, indexes=indexes())),
    "tables_missing_an_index": (Inputs({}, indexes=indexes(missing=["t"])), Inputs({}, indexes=indexes())),
    "dead_rows": (Inputs(table(0.5, 20_000)), Inputs(table(0.5, 5_000))),
    "partitions_ahead": (Inputs(partitions("red")), Inputs(partitions("green"))),
    "materialized_views": (
        Inputs({"materialized_views": [{"name": "mv_x", "populated": False, "registered": False}]}),
        Inputs({"materialized_views": [{"name": "mv_x", "populated": True, "registered": True, "stale": False}]}),
    ),
    "connections_in_use": (Inputs(connections(usage=0.9)), Inputs(connections(usage=0.5))),
    "long_running_queries": (Inputs(connections(long_running=True)), Inputs(connections())),
    "idle_in_transaction": (Inputs(connections(idle=[{"pid": 7}])), Inputs(connections())),
    "stuck_executions": (Inputs(reconciliation(stuck=2)), Inputs(reconciliation())),
    "dead_webhook_deliveries": (Inputs(reconciliation(dead=3)), Inputs(reconciliation())),
    "statement_statistics_missing": (
        Inputs({}, statements=statements(available=False)),
        Inputs({}, statements=statements()),
    ),
    "slow_statements": (Inputs({}, statements=statements(slow=True)), Inputs({}, statements=statements())),
    "sequences_near_overflow": (Inputs({}, sequences=sequence(True)), Inputs({}, sequences=sequence(False))),
    "transaction_id_wraparound": (
        Inputs({}, wraparound={"status": "red", "used_ratio": 0.6}),
        Inputs({}, wraparound={"status": "amber", "used_ratio": 0.2}),
    ),
}
RULE_BY_NAME = {rule.name: rule for rule in RULES}


def given(case, samples) -> Inputs:
    if isinstance(case, Inputs):
        return case
    figures, sampled = case
    samples.update(sampled)
    return Inputs(figures)


def test_every_rule_has_a_case_a_source_and_existing_threshold_settings():
    assert set(CASES) == set(RULE_BY_NAME)
    for rule in RULES:
        assert rule.source, rule.name
        for name in rule.threshold_settings:
            assert hasattr(django_settings, name), (rule.name, name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_rule_fires_past_its_threshold(name, samples):
    inputs = given(CASES[name][0], samples)
    found = RULE_BY_NAME[name].find(inputs)
    assert found, name
    # Through the whole table: only this rule speaks (the other inputs are empty or healthy).
    everything = recommendations(inputs.figures, indexes=inputs.indexes, statements=inputs.statements,
                                 sequences=inputs.sequences, wraparound=inputs.wraparound)  # fmt: skip
    assert everything == sorted(found, key=lambda r: rules_module.SEVERITY_ORDER[r.severity])


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_rule_stays_quiet_below_its_threshold(name, samples):
    inputs = given(CASES[name][1], samples)
    assert list(RULE_BY_NAME[name].find(inputs)) == []
    everything = recommendations(inputs.figures, indexes=inputs.indexes, statements=inputs.statements,
                                 sequences=inputs.sequences, wraparound=inputs.wraparound)  # fmt: skip
    assert [(r.category, r.severity) for r in everything] == [("general", "success")]


def test_thresholds_are_read_from_their_settings(settings):
    below_default = Inputs(table(0.1, 50_000))
    assert rules_module.dead_rows(below_default) == []
    settings.MONITORING_DEAD_ROWS_RATIO_MAX = 0.05
    assert [r.category for r in rules_module.dead_rows(below_default)] == ["vacuum"]
    settings.MONITORING_CONNECTIONS_USAGE_MAX = 0.4
    assert rules_module.connections_in_use(Inputs(connections(usage=0.5)))


def test_p95_above_the_red_setting_is_critical_and_between_the_settings_a_warning(samples):
    samples["db.query_p95_ms"] = 600.0
    assert [r.severity for r in RULE_BY_NAME["query_p95_ms"].find(Inputs({}))] == ["critical"]
    samples["db.query_p95_ms"] = 200.0
    assert [r.severity for r in RULE_BY_NAME["query_p95_ms"].find(Inputs({}))] == ["warning"]


def test_findings_come_most_severe_first():
    inputs = {**table(0.5, 20_000), **reconciliation(stuck=1)}
    found = recommendations(inputs, statements=statements(available=False))
    assert [r.severity for r in found] == ["critical", "warning", "info"]
