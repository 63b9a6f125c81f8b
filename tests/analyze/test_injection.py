"""Injection analyzers: IST0102, IST0103, IST0123 and IST0158, as istioctl analyze reports them."""

from commands.findings import Finding, Level
from tests.support.analysis import analyze_yaml, with_code

INJECTOR = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector, namespace: istio-system}
data:
  values: '{"global": {"hub": "docker.io/istio", "tag": "1.22.1", "proxy": {"image": "proxyv2"}}}'
---
"""


def namespace(name: str, labels: str = "{}") -> str:
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {name}, labels: {labels}}}
---
"""


def pod(name: str, ns: str = "default", proxy: str | None = None, metadata: str = "", spec: str = "") -> str:
    proxy_container = f", {{name: istio-proxy, image: '{proxy}'}}" if proxy else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}} {metadata}}}
spec:
  containers: [{{name: app, image: 'example/app:1'}}{proxy_container}]
  {spec}
---
"""


def only(text: str, code: str) -> Finding:
    found = with_code(analyze_yaml(text), code)
    assert len(found) == 1, found
    return found[0]


def none_of(text: str, code: str) -> None:
    assert with_code(analyze_yaml(text), code) == []


# IST0102 NamespaceNotInjected ------------------------------------------------------------------

def test_unlabelled_namespace_is_ist0102():
    finding = only(namespace("bar"), "IST0102")
    assert finding.level is Level.INFO
    assert finding.origin == "Namespace bar"
    assert finding.message == (
        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace bar "
        "istio-injection=enabled' to enable it, or 'kubectl label namespace bar istio-injection=disabled' "
        "to explicitly mark it as not needing injection.")


def test_disabled_injection_label_is_not_ist0102():
    none_of(namespace("foo", "{istio-injection: disabled}"), "IST0102")


def test_revision_label_is_not_ist0102():
    none_of(namespace("canary-test", "{istio.io/rev: canary}"), "IST0102")


def test_ambient_namespace_is_not_ist0102():
    none_of(namespace("amb", "{istio.io/dataplane-mode: ambient}"), "IST0102")


def test_system_and_istio_namespaces_are_not_ist0102():
    text = "".join(namespace(n) for n in ("kube-system", "kube-public", "kube-node-lease",
                                          "local-path-storage", "istio-system"))
    none_of(text, "IST0102")


def test_namespace_injected_by_default_through_webhook_config_is_not_ist0102():
    injector = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector, namespace: istio-system}
data:
  values: '{"sidecarInjectorWebhook": {"enableNamespacesByDefault": true}}'
---
"""
    none_of(injector + namespace("bar"), "IST0102")


# IST0103 PodMissingProxy -----------------------------------------------------------------------

def test_pod_without_sidecar_in_injected_namespace_is_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + pod("noninjectedpod")
    finding = only(text, "IST0103")
    assert finding.level is Level.WARNING
    assert finding.origin == "Pod default/noninjectedpod"
    assert finding.message == ("The pod default/noninjectedpod is missing the Istio proxy. This can often be "
                               "resolved by restarting or redeploying the workload.")


def test_pod_without_sidecar_in_revision_namespace_is_ist0103():
    text = namespace("canary-test", "{istio.io/rev: canary}") + pod("plain", ns="canary-test")
    assert only(text, "IST0103").origin == "Pod canary-test/plain"


def test_injected_pod_is_not_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + pod("injected", proxy="docker.io/istio/proxyv2:1.22.1")
    none_of(text, "IST0103")


def test_native_sidecar_in_init_containers_is_not_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + """
apiVersion: v1
kind: Pod
metadata: {name: native, namespace: default}
spec:
  initContainers: [{name: istio-proxy, image: 'docker.io/istio/proxyv2:1.22.1', restartPolicy: Always}]
  containers: [{name: app, image: 'example/app:1'}]
"""
    none_of(text, "IST0103")


def test_pod_opting_out_by_annotation_is_not_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + pod(
        "optout", metadata=", annotations: {sidecar.istio.io/inject: 'false'}")
    none_of(text, "IST0103")


def test_pod_label_false_wins_over_annotation_true_and_is_not_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + """
apiVersion: v1
kind: Pod
metadata:
  name: optout
  namespace: default
  labels: {sidecar.istio.io/inject: 'false'}
  annotations: {sidecar.istio.io/inject: 'true'}
spec:
  containers: [{name: app, image: 'example/app:1'}]
"""
    none_of(text, "IST0103")


def test_host_network_pod_is_not_ist0103():
    text = namespace("default", "{istio-injection: enabled}") + pod("hostnet", spec="hostNetwork: true")
    none_of(text, "IST0103")


def test_pod_in_disabled_or_unlabelled_namespace_is_not_ist0103():
    text = (namespace("foo", "{istio-injection: disabled}") + pod("a", ns="foo")
            + namespace("bar") + pod("b", ns="bar"))
    none_of(text, "IST0103")


def test_disabled_injection_wins_over_a_revision_label_so_its_pods_are_not_ist0103():
    # The revision webhook requires istio-injection DoesNotExist (istio-discovery mutatingwebhook.yaml).
    text = namespace("opted-out", "{istio-injection: disabled, istio.io/rev: canary}") + pod("a", ns="opted-out")
    none_of(text, "IST0103")


def test_enabled_injection_wins_over_a_revision_label_and_the_default_revision_injects():
    text = INJECTOR + namespace("both", "{istio-injection: enabled, istio.io/rev: canary}") + pod("a", ns="both")
    assert only(text, "IST0103").origin == "Pod both/a"


def test_pod_in_namespace_injected_by_default_is_not_ist0103():
    # istioctl reports the namespace (IST0148) and checks none of its pods.
    injector = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector, namespace: istio-system}
data:
  values: '{"sidecarInjectorWebhook": {"enableNamespacesByDefault": true}}'
---
"""
    none_of(injector + namespace("bar") + pod("plain", ns="bar"), "IST0103")


# IST0123 NamespaceMultipleInjectionLabels ------------------------------------------------------

def test_namespace_with_injection_and_revision_labels_is_ist0123():
    finding = only(namespace("busted", "{istio-injection: enabled, istio.io/rev: canary}"), "IST0123")
    assert finding.level is Level.WARNING
    assert finding.origin == "Namespace busted"
    assert finding.message == (
        "The namespace has more than one type of injection labels [istio-injection=enabled istio.io/rev=canary], "
        "which may lead to undefined behavior. Make sure only one injection label exists.")


def test_namespace_with_revision_and_ambient_labels_is_ist0123():
    finding = only(namespace("mixed", "{istio.io/rev: canary, istio.io/dataplane-mode: ambient}"), "IST0123")
    assert "[istio.io/rev=canary istio.io/dataplane-mode=ambient]" in finding.message


def test_disabled_injection_with_revision_label_is_not_ist0123():
    # istio-injection=disabled excludes the namespace from every webhook, so the revision label is inert.
    none_of(namespace("opted-out", "{istio-injection: disabled, istio.io/rev: canary}"), "IST0123")


def test_single_injection_label_is_not_ist0123():
    none_of(namespace("one", "{istio.io/rev: canary}") + namespace("two", "{istio-injection: enabled}"), "IST0123")


# IST0158 PodsIstioProxyImageMismatchInNamespace ------------------------------------------------

def test_pods_with_old_proxy_image_are_ist0158_on_their_namespace():
    text = (INJECTOR + namespace("shop", "{istio-injection: enabled}")
            + pod("cart-old", ns="shop", proxy="docker.io/istio/proxyv2:1.21.0")
            + pod("api-old", ns="shop", proxy="docker.io/istio/proxyv2:1.20.0")
            + pod("web-new", ns="shop", proxy="docker.io/istio/proxyv2:1.22.1"))
    finding = only(text, "IST0158")
    assert finding.level is Level.WARNING
    assert finding.origin == "Namespace shop"
    assert finding.message == (
        "The Istio proxy images of the pods running in the namespace do not match the image defined in the "
        "injection configuration (pod names: [api-old cart-old]). This often happens after upgrading the Istio "
        "control-plane and can be fixed by redeploying the pods.")


def test_revision_namespace_is_compared_with_its_revision_injector():
    canary = """
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector-canary, namespace: istio-system}
data:
  values: '{"global": {"hub": "docker.io/istio", "tag": "1.23.0", "proxy": {"image": "proxyv2"}}}'
---
"""
    text = (INJECTOR + canary + namespace("rev", "{istio.io/rev: canary}")
            + pod("on-canary", ns="rev", proxy="docker.io/istio/proxyv2:1.23.0")
            + pod("on-default", ns="rev", proxy="docker.io/istio/proxyv2:1.22.1"))
    assert "(pod names: [on-default])" in only(text, "IST0158").message


def test_current_distroless_and_overridden_images_are_not_ist0158():
    text = (INJECTOR + namespace("shop", "{istio-injection: enabled}")
            + pod("current", ns="shop", proxy="docker.io/istio/proxyv2:1.22.1")
            + pod("distroless", ns="shop", proxy="docker.io/istio/proxyv2:1.22.1-distroless")
            + pod("custom", ns="shop", proxy="example/my-proxy:7",
                  metadata=", annotations: {sidecar.istio.io/proxyImage: 'example/my-proxy:7'}"))
    none_of(text, "IST0158")


def test_old_proxy_in_uninjected_namespace_is_not_ist0158():
    text = INJECTOR + namespace("bar") + pod("old", ns="bar", proxy="docker.io/istio/proxyv2:1.20.0")
    none_of(text, "IST0158")


def test_missing_injector_configmap_skips_ist0158_quietly():
    text = namespace("shop", "{istio-injection: enabled}") + pod("old", ns="shop", proxy="docker.io/istio/proxyv2:1.0")
    none_of(text, "IST0158")


def test_revision_without_its_injector_configmap_is_not_ist0158():
    text = INJECTOR + namespace("rev", "{istio.io/rev: stable}") + pod(
        "old", ns="rev", proxy="docker.io/istio/proxyv2:1.20.0")
    none_of(text, "IST0158")
