"""httpx clients for the plain-http loopback servers tests start (Envoy's admin API and listeners, upstreams).

``httpx.Client()`` loads certifi's CA bundle into a new SSL context every time it is built: about 0.25 s of CPU
here, paid per ``httpx.get``. A test that polls Envoy's ``/ready`` or sends twenty requests through a listener
paid it over and over, which on two loaded cores is most of a real-Envoy test's time.  These URLs are plain
http, so the clients below get an SSL context that trusts no root at all: cheap to build, and an https URL
passed by mistake fails verification instead of going unverified.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx


def loopback_client(**options: Any) -> httpx.Client:
    """An ``httpx.Client`` for http://127.0.0.1 URLs; ``options`` go to the client (timeout, limits, base_url)."""
    return httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), trust_env=False, **options)


def get(url: str, **options: Any) -> httpx.Response:
    """One GET, like ``httpx.get`` without building a CA store for it; ``options`` go to the request."""
    timeout = options.pop("timeout", 5.0)
    with loopback_client(timeout=timeout) as client:
        return client.get(url, **options)


def post(url: str, **options: Any) -> httpx.Response:
    """One POST, like ``httpx.post`` without building a CA store for it; ``options`` go to the request."""
    timeout = options.pop("timeout", 5.0)
    with loopback_client(timeout=timeout) as client:
        return client.post(url, **options)
