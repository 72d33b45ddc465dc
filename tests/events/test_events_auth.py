"""Authentication and tenant checks on the SSE endpoints, before any stream starts
(tests/events/auth_gateway.py: tokens are USER@TENANT, topics TENANT.NAME)."""

from __future__ import annotations

import httpx
import pytest
from events_helpers import SSEReader, publish, sse_client


def _get(gw, path: str, token: str | None = None, method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, gw.url + path, headers=headers, timeout=30)


@pytest.fixture
def gw(stack):
    return stack.auth_gateway()


def test_no_credentials_is_401(gw):
    resp = _get(gw, "/events/acme.jobs")
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("text/plain")


def test_authenticate_comes_before_the_topic_check(gw):
    assert _get(gw, "/events/bad%20topic").status_code == 401
    assert _get(gw, "/events/bad%20topic", "ann@acme").status_code == 400


def test_reject_from_authenticate_gives_its_status(gw):
    resp = _get(gw, "/events/acme.jobs", "banned")
    assert resp.status_code == 403 and resp.text == "Banned"


def test_another_tenants_topic_is_403(gw):
    assert _get(gw, "/events/globex.jobs", "ann@acme").status_code == 403
    assert _get(gw, "/events/globex.jobs/consolidated", "ann@acme").status_code == 403


def test_authorize_none_is_404(gw):
    assert _get(gw, "/events/acme.hidden-plans", "ann@acme").status_code == 404


def test_own_topic_streams(gw):
    headers = {"Authorization": "Bearer ann@acme"}
    with sse_client() as client, \
            client.stream("GET", gw.url + "/events/acme.jobs", headers=headers) as resp:
        assert resp.status_code == 200
        publish(gw.events, [("acme.jobs", "t", "mine")])
        event = SSEReader(resp).next()
    assert event is not None and event.json()["data"] == "mine"


def test_consolidated_stream_merges_children_and_names_each_source(gw):
    headers = {"Authorization": "Bearer ann@acme"}
    url = gw.url + "/events/acme.job1/consolidated"
    with sse_client() as client, client.stream("GET", url, headers=headers) as resp:
        assert resp.status_code == 200
        publish(gw.events, [
            ("other.secret", "t", "another tenant's: never shown"),
            ("acme.unrelated", "t", "not a child: never shown"),
            ("acme.job1", "status", "started"),
            ("acme.job1.step1", "progress", "50%"),
            ("acme.job1.step2", "progress", "10%"),
            ("acme.job1.step1", "progress", "100%"),
            ("acme.job1", "status", "done"),
        ])
        events = SSEReader(resp).events(5)
    got = [(e.json()["topic"], e.event, e.json()["data"], e.id) for e in events]
    assert got == [
        ("acme.job1", "status", "started", "1"),
        ("acme.job1.step1", "progress", "50%", "1"),
        ("acme.job1.step2", "progress", "10%", "1"),
        ("acme.job1.step1", "progress", "100%", "2"),
        ("acme.job1", "status", "done", "2"),
    ]
