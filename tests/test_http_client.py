"""The mesh-endpoint HTTP client: answers past the size cap are refused while they are read, not after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from commands.clients.http import HttpEndpoint
from commands.errors import AccessDenied, TransientError
from tests.support.http_server import ProgrammableServer, start_server


@pytest.fixture
def server() -> Iterator[ProgrammableServer]:
    state, httpd = start_server()
    yield state
    httpd.shutdown()


def test_an_answer_larger_than_the_cap_is_refused_with_the_endpoint_named(server):
    server.answer("/stats", b"x" * 10_000)
    endpoint = HttpEndpoint(server.url, max_body=4096)
    with pytest.raises(TransientError, match="answer larger than 4096 bytes") as raised:
        endpoint.get_text("/stats")
    assert raised.value.endpoint == f"{server.url}/stats"


def test_an_answer_at_the_cap_is_read_whole(server):
    server.answer("/stats", b"cluster.x.upstream_rq_503: 7\n" * 100)
    body = HttpEndpoint(server.url, max_body=2900).get_text("/stats")
    assert body.count("upstream_rq_503") == 100


def test_an_error_status_is_mapped_before_any_body_is_read(server):
    server.answer("/debug/syncz", b"unauthorized", status=401)
    with pytest.raises(AccessDenied, match="HTTP 401"):
        HttpEndpoint(server.url, max_body=1).get_text("/debug/syncz")
