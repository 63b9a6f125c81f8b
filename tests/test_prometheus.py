"""The Prometheus part of a diagnosis, against a real Prometheus backfilled with Istio's standard metrics."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest

from commands.clients.prometheus import PrometheusClient, TooManySeries
from commands.telemetry.onset import find_onset
from commands.telemetry.telemetry import read_telemetry, window_around
from tests.support.http_server import start_server
from tests.support.prometheus import ALERT_AT

START, END = window_around(ALERT_AT)


def _read(url: str, *namespaces: str, **client_options):
    client = PrometheusClient(url, **client_options)
    try:
        return read_telemetry(client, namespaces=list(namespaces), start=START, end=END)
    finally:
        client.close()


def _codes(telemetry) -> list[str]:
    return [f.code for f in telemetry.findings]


def _minutes_before_alert(moment) -> float:
    return (ALERT_AT - moment).total_seconds() / 60


# -- onset shapes ------------------------------------------------------------------------------------


def test_step_onset_is_the_minute_the_403s_began(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, "shop")

    [edge] = telemetry.edges
    assert str(edge.edge) == "frontend.shop -> payments.shop"
    assert _minutes_before_alert(edge.onset.at) == 10
    assert set(edge.codes) == {"403"}


def test_ramp_onset_is_where_the_rise_began_not_where_it_crossed_the_threshold(mesh_prometheus):
    [edge] = _read(mesh_prometheus.url, "ramp").edges

    # The ramp starts 15 minutes before the alert and crosses 5 % about a minute later; rate()'s 2m
    # window shows its first errors one step late.
    assert 14 <= _minutes_before_alert(edge.onset.at) <= 15
    assert "UH" in edge.flags


def test_flapping_edge_has_its_onset_at_the_first_burst(mesh_prometheus):
    [edge] = _read(mesh_prometheus.url, "flap").edges

    assert 11.5 <= _minutes_before_alert(edge.onset.at) <= 12


def test_healthy_traffic_with_a_trickle_of_503s_is_no_failing_edge(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, "calm")

    assert telemetry.edges == ()
    assert telemetry.onset is None
    assert not {"MB6010", "MB6004"} & set(_codes(telemetry))


# -- reporters -------------------------------------------------------------------------------------------


def test_an_edge_reported_by_both_sidecars_is_counted_once(mesh_prometheus):
    [edge] = _read(mesh_prometheus.url, "shop").edges

    # 5 denials a second for the 15 minutes from the onset to the window's end: 4,500, not twice that.
    assert edge.reporter == "source"
    assert 4400 <= edge.errors <= 4700


def test_a_caller_without_a_sidecar_is_seen_through_the_servers_reporter(mesh_prometheus):
    [edge] = _read(mesh_prometheus.url, "legacy").edges

    assert edge.reporter == "destination"
    assert edge.edge.source.name == "unknown"
    assert "UF" in edge.flags
    assert _minutes_before_alert(edge.onset.at) == 8


def test_failing_edge_finding_says_when_it_began_and_with_which_codes(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, "shop")

    [finding] = [f for f in telemetry.findings if f.code == "MB6010"]
    assert finding.message.startswith("frontend.shop -> payments.shop: ")
    assert "since 2026-12-01T09:50:00Z: 403" in finding.message
    assert finding.origin == "Workload shop/payments"


def test_tcp_connections_closed_with_a_response_flag_are_a_failing_tcp_edge(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, "data")

    [edge] = telemetry.tcp_edges
    assert str(edge.edge) == "billing.data -> postgres.data"
    assert set(edge.flags) == {"UF"}
    assert "MB6011" in _codes(telemetry)
    assert "MB6004" not in _codes(telemetry)  # TCP metrics are Istio's metrics too


# -- istiod ----------------------------------------------------------------------------------------------


def test_istiod_trends_report_memory_growth_rejects_slow_convergence_and_csr_errors(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, "calm")

    assert {"MB6020", "MB6021", "MB6022", "MB6023"} <= set(_codes(telemetry))
    assert telemetry.istiod.convergence_p99 > 10


# -- a Prometheus that cannot answer ---------------------------------------------------------------------


def test_without_a_prometheus_meshbot_says_what_it_could_not_see():
    telemetry = read_telemetry(None, namespaces=[], start=START, end=END)

    [finding] = telemetry.findings
    assert finding.code == "MB6001"
    assert "failing edges and onsets" in finding.message


def test_a_prometheus_without_istio_metrics_is_an_info_finding(empty_prometheus):
    telemetry = _read(empty_prometheus.url, "shop")

    assert "MB6004" in _codes(telemetry)
    assert all(f.level == "Info" for f in telemetry.findings)


def test_too_many_series_is_refused_and_the_rest_still_read(mesh_prometheus):
    telemetry = _read(mesh_prometheus.url, max_series=2)

    too_many = [f for f in telemetry.findings if f.code == "MB6003"]
    assert too_many and "more than the 2 meshbot reads" in too_many[0].message
    assert "MB6020" in _codes(telemetry)  # istiod's trends are one series each


def test_the_client_raises_too_many_series_with_the_count():
    server, http = start_server()
    try:
        result = [{"metric": {"i": str(i)}, "value": [1, "1"]} for i in range(3)]
        server.answer("/api/v1/query", {"status": "success", "data": {"resultType": "vector", "result": result}})
        with pytest.raises(TooManySeries) as raised:
            PrometheusClient(server.url, max_series=2).query("up", ALERT_AT, purpose="up")
        assert raised.value.count == 3
    finally:
        http.shutdown()


def test_a_prometheus_that_is_down_costs_one_finding_and_no_wait():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    telemetry = _read(f"http://127.0.0.1:{port}", "shop", timeout=2.0)

    assert time.monotonic() - began < 2.0  # one refused connection, not a timeout per question
    [finding] = telemetry.findings
    assert finding.code == "MB6002" and "connection failed" in finding.message


def test_a_slow_prometheus_is_abandoned_after_one_timeout():
    server, http = start_server()
    try:
        slow = {"status": "success", "data": {"resultType": "vector", "result": []}}
        server.answer("/api/v1/query", slow, delay=3.0)
        server.answer("/api/v1/query_range", slow, delay=3.0)
        began = time.monotonic()
        telemetry = _read(server.url, "shop", timeout=0.5)
        elapsed = time.monotonic() - began
    finally:
        http.shutdown()

    # One question asked, and abandoned at its 0.5 s timeout rather than after the server's 3 s.
    assert len(server.requests) == 1
    assert elapsed < 2.5
    assert [f.code for f in telemetry.findings] == ["MB6002"]
    assert "no answer within 0.5s" in telemetry.findings[0].message


def test_the_client_sends_the_bearer_token_and_bounds_the_query():
    server, http = start_server()
    try:
        server.answer("/api/v1/query_range",
                      {"status": "success", "data": {"resultType": "matrix", "result": []}})
        client = PrometheusClient(server.url, bearer_token="s3cret", timeout=2.0)
        client.query_range("up", ALERT_AT - timedelta(days=30), ALERT_AT, timedelta(seconds=1), purpose="up")
    finally:
        http.shutdown()

    [request] = server.requests
    assert request.headers["Authorization"] == "Bearer s3cret"
    query = dict(part.split("=", 1) for part in request.path.split("?", 1)[1].split("&"))
    assert float(query["end"]) - float(query["start"]) == timedelta(hours=24).total_seconds()
    assert float(query["step"]) >= 86.4  # at most 1,000 points per series
    assert query["timeout"] == "1500ms"


def test_an_answer_larger_than_the_cap_is_not_read_whole():
    server, http = start_server()
    try:
        server.answer("/api/v1/query", "x" * 5000)
        telemetry = _read(server.url, "shop", max_body=1000)
    finally:
        http.shutdown()

    assert "larger than 1000 bytes" in telemetry.findings[0].message


# -- the onset rule on its own ---------------------------------------------------------------------------


def test_one_scrape_spike_is_not_an_onset():
    points = [(float(t), 0.0) for t in range(0, 1200, 30)]
    points[20] = (points[20][0], 0.9)

    assert find_onset(points) is None


def test_a_series_failing_from_the_start_has_no_onset_inside_the_window():
    onset = find_onset([(float(t), 0.4) for t in range(0, 1200, 30)])

    assert onset is not None and onset.at is None and onset.already_failing


def test_connection_security_comes_from_the_servers_proxy(mesh_prometheus):
    [both] = _read(mesh_prometheus.url, "shop").edges
    [client_only] = _read(mesh_prometheus.url, "ramp").edges

    assert both.security == ("mutual_tls",)
    assert client_only.security == ()  # the client's proxy reports "unknown"


def test_prometheus_settings_refuse_credentials_in_the_url_and_hide_the_token():
    from bot.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="MESHBOT_PROMETHEUS_URL"):
        Settings.load({"MESHBOT_PROMETHEUS_URL": "http://admin:pw@prometheus:9090"})
    settings = Settings.load({"MESHBOT_PROMETHEUS_URL": "http://prometheus:9090", "MESHBOT_PROMETHEUS_TOKEN": "s3cret"})
    assert "s3cret" not in repr(settings)
    assert (settings.prometheus_timeout, settings.prometheus_max_series) == (5.0, 500)


def test_captured_answers_are_read_by_purpose_and_a_broken_file_is_a_finding(tmp_path):
    from commands.clients.prometheus import CapturedPrometheus

    (tmp_path / "failing-edges.json").write_text("{not json")

    telemetry = read_telemetry(CapturedPrometheus(tmp_path), namespaces=[], start=START, end=END)

    problem = next(f for f in telemetry.findings if f.code == "MB6002")
    assert "failing-edges.json: not a Prometheus answer" in problem.message
    assert telemetry.istiod.rejects is None  # no file for that purpose: no series, as a Prometheus without it
