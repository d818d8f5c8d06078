"""The platform's webhook guard (project/webhooks.py): a URL is refused, naming the problem, unless
it is http(s) to public addresses only; the refusal is a 400 naming `url` in the API."""

import re
import socket

import pytest
from rest_framework.views import APIView  # first: DRF settings import the renderers, which import the handler

from project.api.errors import domain_error_as_api_exception
from project.webhooks import Claim, WebhookTargetRefused, resolve_target, sign, signed_headers


@pytest.fixture
def private_targets_refused(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://203.0.113.7/hook", "must use http or https, not 'ftp'"),
        ("//no-scheme.example/hook", "must use http or https, not 'no scheme'"),
        ("https:///path-only", "has no host"),
        ("http://1.1.1.1:99999/hook", "cannot be parsed"),
        ("http://no-such-host.invalid/hook", "cannot be resolved"),
        ("https://example.com/" + "x" * 500, "longer than 500 characters"),
    ],
)
def test_a_url_that_is_not_an_http_target_is_refused_naming_the_problem(url, problem):
    with pytest.raises(WebhookTargetRefused, match=problem):
        resolve_target(url)


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://100.64.0.1/hook", "not globally routable"),
    ],
)
def test_internal_addresses_are_refused_unless_the_setting_allows_them(settings, private_targets_refused, url, kind):
    with pytest.raises(WebhookTargetRefused, match=kind):
        resolve_target(url)
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert resolve_target(url).address is None  # the client resolves the name itself


def test_a_name_is_refused_when_any_of_its_addresses_is_internal(private_targets_refused, monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 443)) for ip in ("93.184.216.34", "10.0.0.5")]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(WebhookTargetRefused, match=re.escape("10.0.0.5, a private address")):
        resolve_target("https://hooks.example.com/x")


def test_a_public_name_connects_to_the_checked_address(private_targets_refused, monkeypatch):
    answers = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 8443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    target = resolve_target("https://hooks.example.com:8443/x")
    assert (target.host, target.port, target.address) == ("hooks.example.com", 8443, "93.184.216.34")


def test_the_refusal_is_a_400_naming_the_url_field():
    api_exception = domain_error_as_api_exception(WebhookTargetRefused("The webhook URL has no host."))
    assert api_exception.status_code == 400
    assert api_exception.detail == {"url": ["The webhook URL has no host."]}
    assert api_exception.detail["url"][0].code == "webhook_target_refused"
    assert APIView  # imported for its side effect


def test_without_a_secret_nothing_is_signed_and_with_one_the_signature_covers_timestamp_and_body():
    body = b'{"id":"e1"}'
    unsigned = signed_headers(Claim(1, 1, "task.created", {"id": "e1"}, "https://x.example", ""), body)
    assert "X-Opsdeck-Signature" not in unsigned
    assert unsigned["Idempotency-Key"] == "e1"
    signed = signed_headers(Claim(1, 1, "task.created", {"id": "e1"}, "https://x.example", "k"), body)
    timestamp = int(signed["X-Opsdeck-Timestamp"])
    assert signed["X-Opsdeck-Signature"] == sign(secret="k", timestamp=timestamp, body=body)
    assert sign(secret="k", timestamp=timestamp, body=body) != sign(secret="k", timestamp=timestamp + 1, body=body)
