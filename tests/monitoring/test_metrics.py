"""The cockpit's figures on /metrics: names agreed with the alerts, and an exposition that parses."""

import pytest
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from monitoring.figures import FIGURES_CACHE_KEY, collect_figures
from tests.approvals.factories import VersionFactory

pytestmark = pytest.mark.django_db

FIGURES = {
    "opsdeck_celery_queue_depth": "queue",
    "opsdeck_db_cache_hit_ratio": "kind",
    "opsdeck_db_connections": "state",
    "opsdeck_table_bloat_ratio": "table",
    "opsdeck_partitions_ahead_months": "table",
    "opsdeck_backlog_oldest_pending_age_seconds": "kind",
}


def scrape(client) -> dict:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def test_metrics_exposition_parses_and_has_the_cockpit_figures(client):
    VersionFactory.create_batch(2)
    families = scrape(client)
    for name, label in FIGURES.items():
        assert name in families, name
        assert all(label in sample.labels for sample in families[name].samples), name
    queues = {s.labels["queue"] for s in families["opsdeck_celery_queue_depth"].samples}
    assert {"default", "maintenance", "automation"} <= queues
    partitioned = {s.labels["table"] for s in families["opsdeck_partitions_ahead_months"].samples}
    assert "project_activitylog" in partitioned
    (oldest,) = families["opsdeck_backlog_oldest_pending_age_seconds"].samples
    assert oldest.labels == {"kind": "approvals_version"} and oldest.value >= 0
    assert families["opsdeck_db_max_connections"].samples[0].value > 0
    webhooks = {s.labels["status"] for s in families["opsdeck_webhook_deliveries"].samples}
    assert webhooks == {"due", "failed", "dead"}
    executions = {s.labels["status"] for s in families["opsdeck_reconciliation_executions"].samples}
    assert executions == {"queued", "running", "stuck"}


def test_a_scrape_reads_the_cached_figures_instead_of_the_catalogs(client, django_assert_max_num_queries):
    collect_figures()
    assert cache.get(FIGURES_CACHE_KEY) is not None
    with django_assert_max_num_queries(0):
        scrape(client)
