"""Service analyzers: IST0118 port names that do not follow Istio's protocol naming convention."""

import pytest

from commands.findings import Level
from tests.support.analysis import analyze_yaml, with_code


def service(ports: str, namespace: str = "default", labels: str = "{}", extra: str = "") -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: my-svc, namespace: {namespace}, labels: {labels}}}
spec:
  selector: {{app: my-app}}
  ports: {ports}
  {extra}
"""


def port_findings(text: str):
    return with_code(analyze_yaml(text), "IST0118")


def test_port_name_without_protocol_prefix_is_ist0118():
    (finding,) = port_findings(service("[{name: foo-bar, port: 8080, targetPort: 9090}]"))
    assert finding.level is Level.INFO
    assert finding.origin == "Service default/my-svc"
    assert finding.message == ("Port name foo-bar (port: 8080, targetPort: 9090) doesn't follow the naming "
                               "convention of Istio port.")


def test_unnamed_port_is_ist0118_with_defaulted_target_port():
    (finding,) = port_findings(service("[{port: 8080}]"))
    assert finding.message.startswith("Port name  (port: 8080, targetPort: 8080)")


def test_named_target_port_is_printed_as_its_name():
    (finding,) = port_findings(service("[{name: web, port: 80, targetPort: web-port}]"))
    assert "(port: 80, targetPort: web-port)" in finding.message


def test_unknown_app_protocol_is_ist0118_even_with_a_good_name():
    # Istio reads appProtocol instead of the name when it is set.
    assert len(port_findings(service("[{name: http, appProtocol: custom, port: 80}]"))) == 1


@pytest.mark.parametrize("port", [
    "{name: http, port: 80}",
    "{name: HTTP-web, port: 80}",
    "{name: grpc-web-ui, port: 80}",
    "{name: tcp-db, port: 5432}",
    "{name: https, port: 443}",
    "{name: tls-passthrough, port: 443}",
    "{name: http2-api, port: 80}",
    "{name: mongo, port: 27018}",
    "{name: redis-cache, port: 6379}",
    "{name: mysql-primary, port: 3307}",
    "{name: foo, appProtocol: http, port: 80}",
    "{name: foo, appProtocol: kubernetes.io/h2c, port: 80}",
    "{name: foo, appProtocol: kubernetes.io/wss, port: 443}",
    "{name: dns, port: 53, protocol: UDP}",
    "{name: smtp, port: 25}",
    "{name: db, port: 3306}",
])
def test_port_with_a_known_protocol_is_not_ist0118(port):
    assert port_findings(service(f"[{port}]")) == []


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"])
def test_service_in_system_namespace_is_not_ist0118(namespace):
    assert port_findings(service("[{name: foo, port: 80}]", namespace=namespace)) == []


def test_istio_control_plane_service_is_not_ist0118():
    text = service("[{name: foo, port: 80}]", namespace="istio-system", labels="{istio: pilot}")
    assert port_findings(text) == []


def test_external_name_service_is_not_ist0118():
    text = service("[{name: foo, port: 80}]", extra="type: ExternalName\n  externalName: example.com")
    assert port_findings(text) == []


def test_waypoint_service_istio_generated_is_not_ist0118():
    # istio/istio testdata service-port-name.yaml: the waypoint's "status-port" and "mesh" ports.
    text = service("[{name: status-port, port: 15021, appProtocol: tcp}, {name: mesh, port: 15008, appProtocol: hbone}]",
                   labels="{gateway.istio.io/managed: istio.io-mesh-controller}")
    assert port_findings(text) == []


def test_service_with_another_managed_label_value_is_still_checked():
    text = service("[{name: web, port: 8080}]", labels="{gateway.istio.io/managed: someone-else}")
    assert [f.code for f in port_findings(text)] == ["IST0118"]
