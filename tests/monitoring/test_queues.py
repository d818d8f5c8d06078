"""Celery queue depth: kombu's Redis lists, its priority sub-lists and a global key prefix."""

import os

import pytest

import project.celery
from monitoring.selectors.backlog import queue_depths

pytestmark = pytest.mark.django_db

QUEUE = f"monitoring-test-{os.getpid()}"  # a queue no worker consumes
PRIORITY_SEP = "\x06\x16"  # kombu's separator of a queue's priority lists


@pytest.fixture
def broker_client():
    with project.celery.app.connection_for_write() as conn:
        client = conn.default_channel.client
        yield client


def test_depth_adds_up_the_queue_and_its_priority_lists(broker_client):
    keys = [QUEUE, f"{QUEUE}{PRIORITY_SEP}3", f"{QUEUE}{PRIORITY_SEP}9"]
    try:
        broker_client.rpush(keys[0], "a", "b")
        broker_client.rpush(keys[1], "c")
        broker_client.rpush(keys[2], "d", "e", "f")
        depths = queue_depths([QUEUE, "monitoring-test-empty"])
        assert depths["available"]
        assert {q["queue"]: q["depth"] for q in depths["queues"]} == {QUEUE: 6, "monitoring-test-empty": 0}
    finally:
        broker_client.delete(*keys)


def test_depth_honours_the_transports_global_key_prefix(monkeypatch):
    prefix = f"montest-{os.getpid()}:"
    options = {**project.celery.app.conf.broker_transport_options, "global_keyprefix": prefix}
    monkeypatch.setitem(project.celery.app.conf, "broker_transport_options", options)
    with project.celery.app.connection_for_write() as conn:
        raw = conn.default_channel.client
        raw.rpush(QUEUE, "a")  # the prefixed client stores it under prefix + queue
    try:
        assert queue_depths([QUEUE])["queues"] == [{"queue": QUEUE, "depth": 1}]
        monkeypatch.setitem(project.celery.app.conf, "broker_transport_options", {})
        assert queue_depths([QUEUE])["queues"] == [{"queue": QUEUE, "depth": 0}]  # unprefixed: not there
    finally:
        with project.celery.app.connection_for_write() as conn:
            conn.default_channel.client.delete(prefix + QUEUE)


def test_an_unreachable_broker_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(project.celery.app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(
        project.celery.app.conf, "broker_transport_options", {"socket_connect_timeout": 0.2, "max_retries": 0}
    )
    depths = queue_depths(["default"])
    assert depths["available"] is False and depths["error"]
