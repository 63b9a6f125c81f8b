"""Pods shaped like the ones Istio's sidecar injector and a real cluster produce (~18 KB with managedFields).

The shape follows istio/istio manifests/charts/istio-control/istio-discovery/files/injection-template.yaml
(istio-init, istio-proxy with its env, ports, probes and the istio-envoy/istio-data/istio-podinfo/istio-token/
istiod-ca-cert volumes) and what the API server adds: kube-api-access, managedFields from the ReplicaSet
controller and the kubelet, status with conditions and container states.  Used to measure memory and to prove
that trimming a pod changes no check's findings.
"""

from __future__ import annotations

import json
from typing import Any

PROXY_IMAGE = "docker.io/istio/proxyv2:1.22.3"
_TIME = "2026-12-07T08:00:00Z"


def _fields(paths: list[str]) -> dict[str, Any]:
    """A managedFields fieldsV1 tree with one ``f:``/``k:`` entry per path, as server-side apply records it."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node["."] = {}
    return tree


def _container_paths(name: str, env: list[str], mounts: list[str], ports: list[int]) -> list[str]:
    base = f'f:spec/f:containers/k:{{"name":"{name}"}}'
    paths = [f"{base}/f:{field}" for field in ("image", "imagePullPolicy", "terminationMessagePath",
                                               "terminationMessagePolicy", "args", "name")]
    paths += [f"{base}/f:resources/f:{kind}/f:{what}" for kind in ("limits", "requests") for what in ("cpu", "memory")]
    paths += [f"{base}/f:securityContext/f:{field}" for field in (
        "allowPrivilegeEscalation", "capabilities/f:drop", "privileged", "readOnlyRootFilesystem", "runAsGroup",
        "runAsNonRoot", "runAsUser")]
    paths += [f"{base}/f:readinessProbe/f:{field}" for field in (
        "failureThreshold", "httpGet/f:path", "httpGet/f:port", "httpGet/f:scheme", "periodSeconds",
        "successThreshold", "timeoutSeconds")]
    for e in env:
        paths += [f'{base}/f:env/k:{{"name":"{e}"}}/f:name', f'{base}/f:env/k:{{"name":"{e}"}}/f:value',
                  f'{base}/f:env/k:{{"name":"{e}"}}/f:valueFrom/f:fieldRef/f:apiVersion',
                  f'{base}/f:env/k:{{"name":"{e}"}}/f:valueFrom/f:fieldRef/f:fieldPath']
    paths += [f'{base}/f:volumeMounts/k:{{"mountPath":"{m}"}}/f:{f}' for m in mounts
              for f in ("mountPath", "name", "readOnly")]
    paths += [f'{base}/f:ports/k:{{"containerPort":{p},"protocol":"TCP"}}/f:name' for p in ports]
    return paths


_PROXY_ENV = [
    ("PILOT_CERT_PROVIDER", "istiod"), ("CA_ADDR", "istiod.istio-system.svc:15012"), ("POD_NAME", None),
    ("POD_NAMESPACE", None), ("INSTANCE_IP", None), ("SERVICE_ACCOUNT", None), ("HOST_IP", None),
    ("ISTIO_CPU_LIMIT", None), ("PROXY_CONFIG", "{}\n"), ("ISTIO_META_POD_PORTS", None),
    ("ISTIO_META_APP_CONTAINERS", "app"), ("GOMEMLIMIT", None), ("GOMAXPROCS", None),
    ("ISTIO_META_CLUSTER_ID", "Kubernetes"), ("ISTIO_META_NODE_NAME", None), ("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"),
    ("ISTIO_META_WORKLOAD_NAME", None), ("ISTIO_META_OWNER", None), ("ISTIO_META_MESH_ID", "cluster.local"),
    ("TRUST_DOMAIN", "cluster.local"), ("ISTIO_KUBE_APP_PROBERS", None),
]
_PROXY_MOUNTS = ["/var/run/secrets/workload-spiffe-uds", "/var/run/secrets/credential-uds",
                 "/var/run/secrets/workload-spiffe-credentials", "/var/run/secrets/istio", "/var/lib/istio/data",
                 "/etc/istio/proxy", "/var/run/secrets/tokens", "/etc/istio/pod",
                 "/var/run/secrets/kubernetes.io/serviceaccount"]


def _proxy_env(name: str, namespace: str, app: str) -> list[dict[str, Any]]:
    values = {
        "ISTIO_META_POD_PORTS": json.dumps([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]),
        "ISTIO_META_WORKLOAD_NAME": app,
        "ISTIO_META_OWNER": f"kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/{app}",
        "ISTIO_KUBE_APP_PROBERS": json.dumps({"/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8080,
                                                                                      "scheme": "HTTP"},
                                                                          "timeoutSeconds": 1}}),
    }
    env: list[dict[str, Any]] = []
    for key, value in _PROXY_ENV:
        value = values.get(key, value)
        if value is not None:
            env.append({"name": key, "value": value})
        else:
            env.append({"name": key, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}})
    return env


def injected_pod(name: str, namespace: str, labels: dict[str, str], *, restarts: int = 0,
                 container: str = "istio-proxy") -> dict[str, Any]:
    """One running pod with an injected sidecar, as ``kubectl get pod -o json`` shows it (managedFields included)."""
    app = labels.get("app", name)
    labels = {**labels, "security.istio.io/tlsMode": "istio", "service.istio.io/canonical-name": app,
              "service.istio.io/canonical-revision": labels.get("version", "latest"), "pod-template-hash": "7d9f8c6b5"}
    status_annotation = json.dumps({
        "initContainers": ["istio-init"], "containers": ["istio-proxy"],
        "volumes": ["workload-socket", "credential-socket", "workload-certs", "istio-envoy", "istio-data",
                    "istio-podinfo", "istio-token", "istiod-ca-cert"],
        "imagePullSecrets": None, "revision": "default"})
    proxy = {
        "name": container, "image": PROXY_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["proxy", "sidecar", "--domain", f"{namespace}.svc.cluster.local", "--proxyLogLevel=warning",
                 "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "env": _proxy_env(name, namespace, app),
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        "readinessProbe": {"failureThreshold": 4, "httpGet": {"path": "/healthz/ready", "port": 15021,
                                                              "scheme": "HTTP"},
                           "periodSeconds": 15, "successThreshold": 1, "timeoutSeconds": 3},
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "privileged": False, "readOnlyRootFilesystem": True, "runAsGroup": 1337,
                            "runAsNonRoot": True, "runAsUser": 1337},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "volumeMounts": [{"mountPath": m, "name": m.rsplit("/", 1)[-1] or "root"} for m in _PROXY_MOUNTS],
    }
    app_container = {
        "name": "app", "image": f"registry.example.com/{app}:1.0", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"},
                           "periodSeconds": 10, "timeoutSeconds": 1},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access",
                          "readOnly": True}],
    }
    init = {"name": "istio-init", "image": PROXY_IMAGE,
            "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                     "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "10m", "memory": "40Mi"}},
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                                "runAsNonRoot": False, "runAsUser": 0}}
    volumes = [{"name": "workload-socket", "emptyDir": {}}, {"name": "credential-socket", "emptyDir": {}},
               {"name": "workload-certs", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
               {"name": "istio-data", "emptyDir": {}},
               {"name": "istio-podinfo", "downwardAPI": {"items": [
                   {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                   {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}},
               {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                   "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
               {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
               {"name": "kube-api-access", "projected": {"sources": [
                   {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                   {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                   {"downwardAPI": {"items": [{"path": "namespace",
                                               "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}]
    spec_paths = (_container_paths("app", [], ["/var/run/secrets/kubernetes.io/serviceaccount"], [8080])
                  + _container_paths(container, [k for k, _ in _PROXY_ENV], _PROXY_MOUNTS, [15090])
                  + [f'f:spec/f:volumes/k:{{"name":"{v["name"]}"}}/f:name' for v in volumes]
                  + ["f:metadata/f:annotations/f:sidecar.istio.io~1status", "f:metadata/f:labels/f:app",
                     "f:metadata/f:ownerReferences/k:{\"uid\":\"5b1c\"}/f:uid"])
    status_paths = [f'f:status/f:conditions/k:{{"type":"{t}"}}/f:{f}' for t in
                    ("ContainersReady", "Initialized", "PodReadyToStartContainers", "PodScheduled", "Ready")
                    for f in ("lastProbeTime", "lastTransitionTime", "status", "type")]
    status_paths += ["f:status/f:containerStatuses", "f:status/f:hostIP", "f:status/f:initContainerStatuses",
                     "f:status/f:phase", "f:status/f:podIP", "f:status/f:podIPs/k:{\"ip\":\"10.0.0.1\"}/f:ip",
                     "f:status/f:startTime"]

    def state(name: str, count: int) -> dict[str, Any]:
        return {"name": name, "ready": True, "restartCount": count, "started": True,
                "image": PROXY_IMAGE if name != "app" else app_container["image"],
                "imageID": "docker.io/istio/proxyv2@sha256:" + "0" * 64, "containerID": "containerd://" + "a" * 64,
                "state": {"running": {"startedAt": _TIME}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": _TIME,
                                             "finishedAt": _TIME}} if count else {}}

    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels, "uid": "5b1c0a2e-0000-4000-8000-000000000000",
            "creationTimestamp": _TIME, "generateName": f"{app}-7d9f8c6b5-",
            "annotations": {"sidecar.istio.io/status": status_annotation, "istio.io/rev": "default",
                            "kubectl.kubernetes.io/default-container": "app",
                            "kubectl.kubernetes.io/default-logs-container": "app",
                            "prometheus.io/path": "/stats/prometheus", "prometheus.io/port": "15020",
                            "prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{app}-7d9f8c6b5",
                                 "uid": "5b1c", "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": _TIME,
                 "fieldsType": "FieldsV1", "fieldsV1": _fields(spec_paths)},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": _TIME,
                 "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": _fields(status_paths)}],
        },
        "spec": {"containers": [app_container, proxy], "initContainers": [init], "volumes": volumes,
                 "serviceAccountName": app, "nodeName": "node-1", "restartPolicy": "Always",
                 "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler",
                 "securityContext": {}, "terminationGracePeriodSeconds": 30,
                 "tolerations": [{"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                  "tolerationSeconds": 300},
                                 {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
                                  "operator": "Exists", "tolerationSeconds": 300}]},
        "status": {"phase": "Running", "hostIP": "192.168.0.10", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                   "qosClass": "Burstable", "startTime": _TIME,
                   "conditions": [{"type": t, "status": "True", "lastTransitionTime": _TIME, "lastProbeTime": None}
                                  for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                                            "PodScheduled")],
                   "initContainerStatuses": [{"name": "istio-init", "ready": True, "restartCount": 0,
                                              "image": PROXY_IMAGE, "imageID": "", "containerID": "",
                                              "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                                       "startedAt": _TIME, "finishedAt": _TIME}}}],
                   "containerStatuses": [state("app", 0), state(container, restarts)]},
    }
