"""The finding-code catalogue: Istio's IST#### analyzer messages and meshbot's own MB#### codes.

Longer than 450 lines because it is one table (every code once, with its level and message), not several concepts.

A code fixes the level and the message template; checks fill in the arguments.
``IST`` entries mirror istio/istio ``pkg/config/analysis/msg/messages.yaml`` so
messages read exactly as ``istioctl analyze`` prints them.  The table
in docs/codes.md is generated from ``MESHBOT_CODES`` (``meshbot codes --markdown``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from commands.findings import Finding, Level, Remediation

ISTIO_DOCS = "https://istio.io/latest/docs/reference/config/analysis/{code}/"
MESHBOT_DOCS = "https://github.com/meshbot/meshbot/blob/main/docs/codes.md#{code}"


@dataclass(frozen=True)
class Code:
    code: str
    name: str
    level: Level
    template: str
    """``str.format`` template; named fields are the message arguments."""
    check: str
    """The check that emits it (``analyze`` for every IST code)."""
    description: str = ""

    @property
    def documentation_url(self) -> str:
        docs = ISTIO_DOCS if self.code.startswith("IST") else MESHBOT_DOCS
        return docs.format(code=self.code.lower())


def go_list(items: Iterable[Any]) -> str:
    """Format a list the way Go's ``%v`` does (``[a b c]``), as istioctl prints it."""
    return "[" + " ".join(str(i) for i in items) + "]"


def _code(code: str, name: str, level: Level, check: str, template: str, description: str = "") -> Code:
    return Code(code=code, name=name, level=level, template=template, check=check, description=description)


E, W, I = Level.ERROR, Level.WARNING, Level.INFO  # noqa: E741  (short names keep the table readable)

ISTIO_CODES: dict[str, Code] = {c.code: c for c in [
    _code("IST0101", "ReferencedResourceNotFound", E, "analyze",
          'Referenced {reftype} not found: "{refval}"'),
    _code("IST0102", "NamespaceNotInjected", I, "analyze",
          "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {namespace} "
          "istio-injection=enabled' to enable it, or 'kubectl label namespace {namespace} "
          "istio-injection=disabled' to explicitly mark it as not needing injection."),
    _code("IST0103", "PodMissingProxy", W, "analyze",
          "The pod {pod} is missing the Istio proxy. This can often be resolved by restarting or "
          "redeploying the workload."),
    _code("IST0109", "ConflictingMeshGatewayVirtualServiceHosts", E, "analyze",
          "The VirtualServices {virtual_services} associated with mesh gateway define the same host {host} "
          "which can lead to undefined behavior. This can be fixed by merging the conflicting "
          "VirtualServices into a single resource."),
    _code("IST0110", "ConflictingSidecarWorkloadSelectors", E, "analyze",
          'The Sidecars {sidecars} in namespace "{namespace}" select the same workload pod "{pod}", '
          "which can lead to undefined behavior."),
    _code("IST0111", "MultipleSidecarsWithoutWorkloadSelectors", E, "analyze",
          'The Sidecars {sidecars} in namespace "{namespace}" have no workload selector, which can lead '
          "to undefined behavior."),
    _code("IST0112", "VirtualServiceDestinationPortSelectorRequired", E, "analyze",
          'This VirtualService routes to a service "{host}" that exposes multiple ports {ports}. '
          "Specifying a port in the destination is required to disambiguate."),
    _code("IST0116", "DeploymentAssociatedToMultipleServices", W, "analyze",
          "This deployment {deployment} is associated with multiple services using port {port} but different "
          "protocols: {services}"),
    _code("IST0118", "PortNameIsNotUnderNamingConvention", I, "analyze",
          "Port name {port_name} (port: {port}, targetPort: {target_port}) doesn't follow the naming "
          "convention of Istio port."),
    _code("IST0123", "NamespaceMultipleInjectionLabels", W, "analyze",
          "The namespace has more than one type of injection labels {labels}, which may lead to undefined "
          "behavior. Make sure only one injection label exists."),
    _code("IST0127", "NoMatchingWorkloadsFound", W, "analyze",
          "No matching workloads for this resource with the following labels: {labels}"),
    _code("IST0128", "NoServerCertificateVerificationDestinationLevel", W, "analyze",
          "DestinationRule {destination_rule} in namespace {namespace} has TLS mode set to {mode} but no "
          "caCertificates are set to validate server identity for host: {host}"),
    _code("IST0129", "NoServerCertificateVerificationPortLevel", W, "analyze",
          "DestinationRule {destination_rule} in namespace {namespace} has TLS mode set to {mode} but no "
          "caCertificates are set to validate server identity for host: {host} at port {port}"),
    _code("IST0130", "VirtualServiceUnreachableRule", W, "analyze",
          "VirtualService rule {ruleno} not used ({reason})."),
    _code("IST0131", "VirtualServiceIneffectiveMatch", I, "analyze",
          "VirtualService rule {ruleno} match {matchno} is not used (duplicate/overlapping match in rule {dupno})."),
    _code("IST0132", "VirtualServiceHostNotFoundInGateway", W, "analyze",
          "one or more host {hosts} defined in VirtualService {virtual_service} not found in Gateway {gateway}."),
    _code("IST0134", "ServiceEntryAddressesRequired", W, "analyze",
          "ServiceEntry addresses are required for this protocol."),
    _code("IST0137", "DeploymentConflictingPorts", W, "analyze",
          'This deployment {deployment} is associated with multiple services {services} using targetPort '
          '"{target_port}" but different ports: {ports}.'),
    _code("IST0138", "GatewayDuplicateCertificate", W, "analyze",
          "Duplicate certificate in multiple gateways {gateways} may cause 404s if clients re-use HTTP2 "
          "connections."),
    _code("IST0139", "InvalidWebhook", E, "analyze", "{error}"),
    _code("IST0144", "InvalidApplicationUID", W, "analyze",
          "User ID (UID) 1337 is reserved for the sidecar proxy."),
    _code("IST0145", "ConflictingGateways", E, "analyze",
          "Conflict with gateways {gateways} (workload selector {selector}, port {port}, hosts {hosts})."),
    _code("IST0146", "ImageAutoWithoutInjectionWarning", W, "analyze",
          "{resource_type} {resource_name} contains `image: auto` but does not match any Istio injection webhook "
          "selectors."),
    _code("IST0147", "ImageAutoWithoutInjectionError", E, "analyze",
          "{resource_type} {resource_name} contains `image: auto` but does not match any Istio injection webhook "
          "selectors."),
    _code("IST0149", "JwtClaimBasedRoutingWithoutRequestAuthN", E, "analyze",
          "The virtual service uses the JWT claim based routing (key: {key}) but found no request authentication "
          "for the gateway ({gateway}) pod ({pod}). The request authentication must first be applied for the "
          "gateway pods to validate the JWT token and make the claims available for routing."),
    _code("IST0150", "ExternalNameServiceTypeInvalidPortName", W, "analyze",
          "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic "
          "for ports serving TCP protocol from being forwarded correctly"),
    _code("IST0151", "EnvoyFilterUsesRelativeOperation", W, "analyze",
          "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the "
          "EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help "
          "in ensuring the EnvoyFilter is applied correctly."),
    _code("IST0152", "EnvoyFilterUsesReplaceOperationIncorrectly", E, "analyze",
          "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER."),
    _code("IST0153", "EnvoyFilterUsesAddOperationIncorrectly", E, "analyze",
          "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE."),
    _code("IST0154", "EnvoyFilterUsesRemoveOperationIncorrectly", E, "analyze",
          "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE."),
    _code("IST0155", "EnvoyFilterUsesRelativeOperationWithProxyVersion", W, "analyze",
          "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, "
          "REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during "
          "an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the "
          "EnvoyFilter is applied correctly."),
    _code("IST0158", "PodsIstioProxyImageMismatchInNamespace", W, "analyze",
          "The Istio proxy images of the pods running in the namespace do not match the image defined in "
          "the injection configuration (pod names: {pods}). This often happens after upgrading the Istio "
          "control-plane and can be fixed by redeploying the pods."),
    _code("IST0161", "InvalidGatewayCredential", E, "analyze",
          "The credential referenced by the Gateway {gateway} in namespace {namespace} is invalid, which "
          "can cause the traffic not to work as expected."),
    _code("IST0162", "GatewayPortNotDefinedOnService", W, "analyze",
          "The gateway is listening on a target port (port {port}) that is not defined in the Service "
          "associated with its workload instances (Pod selector {selector}). If you need to access the "
          "gateway port through the gateway Service, it will not be available."),
    _code("IST0163", "InvalidExternalControlPlaneConfig", W, "analyze",
          "The hostname ({hostname}) that was provided for the webhook ({webhook}) to reach the ingress gateway on "
          "the external control plane cluster {problem}. Traffic may not flow properly."),
    _code("IST0164", "ExternalControlPlaneAddressIsNotAHostname", I, "analyze",
          "The address ({hostname}) that was provided for the webhook ({webhook}) to reach the ingress gateway on "
          "the external control plane cluster is an IP address. This is not recommended for a production "
          "environment."),
    _code("IST0165", "ReferencedInternalGateway", W, "analyze",
          "Gateway reference in VirtualService {virtual_service} is to an implementation-generated internal "
          "Gateway: {gateway}."),
    _code("IST0166", "IneffectiveSelector", W, "analyze",
          "Ineffective selector on Kubernetes Gateway {gateway}. Use the TargetRef field instead."),
    _code("IST0171", "NegativeConditionStatus", W, "analyze",
          "A condition with a negative status is present: type={condition_type}, reason={reason}, "
          "message={condition_message}."),
    _code("IST0173", "DestinationRuleSubsetNotSelectPods", E, "analyze",
          "The Subset {subset} defined in the DestinationRule does not select any pods. Which may lead to "
          "503 UH (NoHealthyUpstream)."),
    _code("IST0174", "UnknownDestinationRuleHost", W, "analyze",
          "The host {host} defined in the DestinationRule does not match any services in the mesh."),
    _code("IST0177", "ConflictingServiceEntryProtocol", W, "analyze",
          'Multiple ServiceEntries ({service_entries}) define the same host "{host}" and port {port} with '
          "conflicting protocols ({protocols})."),
]}

# meshbot's own codes.  Ranges: MB00xx reading the cluster, MB1xxx status, MB2xxx
# proxy-status, MB3xxx certs, MB4xxx envoy, MB6xxx telemetry.  Keep docs/codes.md's table in step
# (tests/test_codes.py fails when it is not).
MESHBOT_CODES: dict[str, Code] = {c.code: c for c in [
    _code("MB0001", "ClusterAccessDenied", E, "cluster",
          "meshbot cannot {verb} {resource}{scope}: {reason} (needs RBAC {verb} on {resource})",
          "The Kubernetes API answered 401/403; the message names the missing permission."),
    _code("MB0002", "ClusterUnreachable", E, "cluster",
          "The Kubernetes API did not answer {verb} {resource}{scope}: {reason}",
          "Timeout, connection refused or a 5xx from the API server."),
    _code("MB0003", "ResourceTypeNotServed", I, "cluster",
          "The cluster does not serve {resource} ({api}); checks that need it were skipped",
          "A 404 on a list call: the CRD (or metrics-server) is not installed."),
    _code("MB0004", "CheckSkipped", I, "cluster",
          "{check_name} skipped: {reason}",
          "A check could not run with the inputs given (no cluster data, no endpoints)."),
    _code("MB0005", "CheckFailed", E, "cluster",
          "{check_name} failed unexpectedly: {reason}",
          "A bug or an unexpected answer; the other checks still ran."),
    _code("MB1001", "ControlPlanePodNotReady", E, "status",
          "{role} pod {pod} is not ready (phase {phase}); {consequence}",
          "An istiod or gateway pod is not Ready."),
    _code("MB1002", "ControlPlaneOOMKilled", E, "status",
          "{role} container {container} in {pod} was OOMKilled ({restarts} restarts); raise its memory "
          "limit (now {limit}) or reduce config size",
          "The control plane or a gateway ran out of memory."),
    _code("MB1003", "ControlPlaneCrashLoop", E, "status",
          "{role} container {container} in {pod} is in CrashLoopBackOff ({restarts} restarts)",
          "The control plane or a gateway keeps crashing."),
    _code("MB1004", "ControlPlaneRestarting", W, "status",
          "{role} container {container} in {pod} restarted {restarts} times",
          "Restarts at or above the threshold without a current crash loop."),
    _code("MB1005", "ControlPlaneMemoryNearLimit", W, "status",
          "{role} container {container} in {pod} uses {usage} of its {limit} memory limit ({percent}%)",
          "Memory use at or above the near-limit ratio (default 90%); OOMKill is next."),
    _code("MB1006", "ControlPlaneMissing", E, "status",
          "No istiod pods found in namespace {namespace}; sidecars cannot receive configuration or certificates",
          "No control plane pods at all."),
    _code("MB1011", "SidecarCrashLoop", E, "status",
          "Sidecar istio-proxy in {pod} is in CrashLoopBackOff ({restarts} restarts)",
          "An Envoy sidecar keeps crashing; its workload is out of the mesh."),
    _code("MB1012", "SidecarOOMKilled", E, "status",
          "Sidecar istio-proxy in {pod} was OOMKilled ({restarts} restarts); raise its memory limit "
          "(now {limit}) or trim its config with a Sidecar resource",
          "An Envoy sidecar ran out of memory."),
    _code("MB1013", "SidecarNotReady", W, "status",
          "Sidecar istio-proxy in {pod} is not ready; the pod receives no mesh traffic",
          "The istio-proxy container is not Ready."),
    _code("MB1014", "SidecarRestarting", W, "status",
          "Sidecar istio-proxy in {pod} restarted {restarts} times",
          "Restarts at or above the threshold without a current crash loop."),
    _code("MB1015", "SidecarMemoryNearLimit", W, "status",
          "Sidecar istio-proxy in {pod} uses {usage} of its {limit} memory limit ({percent}%)",
          "Memory use at or above the near-limit ratio."),
    _code("MB1020", "NamespaceSidecarSummary", I, "status",
          "Namespace {namespace}: {sidecars}, {ready} ready, {crashlooping} crash-looping, "
          "{restarting} restarting",
          "Per-namespace sidecar counts."),
    # Admission: Istio's injector webhook fails closed (failurePolicy: Fail in manifests/charts/istio-control/
    # istio-discovery/templates/mutatingwebhook.yaml), and its namespaceSelector picks namespaces by
    # istio-injection / istio.io/rev; the kube-apiserver refuses pods it cannot send to a selected webhook.
    _code("MB1040", "InjectionWebhookUnavailable", E, "status",
          "Sidecar injector webhook {webhook} cannot be reached ({reason}) and fails closed: new pods in {scope} "
          "are refused",
          "The webhook's Service has no ready istiod behind it; pod creation in injected namespaces fails."),
    _code("MB1041", "RevisionNotServed", E, "status",
          "Namespace {namespace} asks for Istio revision {revision}, which no injection webhook serves "
          "(served: {served}); new pods there start without a sidecar",
          "A namespace labelled for a revision or tag with no webhook (istio.io/rev on the webhook configuration)."),
    _code("MB1042", "PodCreationBlocked", E, "status",
          "{owner} cannot create pods: {reason} ({count} times, last {last_seen})",
          "A ReplicaSet's ReplicaFailure condition or FailedCreate Events: the workload cannot replace its pods."),
    # proxy-status follows istioctl proxy-status (istioctl/pkg/writer/pilot/status.go) over istiod's
    # /debug/syncz (pilot/pkg/xds/debug.go SyncStatus); the per-type states are statusgen.go debugSyncStatus.
    _code("MB2000", "ProxySyncSummary", I, "proxy-status",
          "{synced} synced, {stale} stale, {error} rejecting config, {not_sent} not sent "
          "({total} proxies across {istiods} istiod)",
          "The first line of proxy-status."),
    _code("MB2001", "ProxyStale", W, "proxy-status",
          "Proxy {proxy} has not acknowledged the latest {types} push from istiod yet",
          "Sent and acknowledged nonces differ with no error reported (istioctl: STALE, or STALE (Never "
          "Acknowledged) before 1.22): usually a push in flight, not a rejection."),
    _code("MB2002", "ProxyConfigRejected", E, "proxy-status",
          'Proxy {proxy} rejected the {types} config istiod pushed (istioctl: ERROR): Envoy says "{error}"',
          "Envoy NACKed a push; istiod 1.23+ records its lastError (istioctl: ERROR). Fix the config it names; "
          "a restart fetches the same rejected config."),
    _code("MB2003", "ProxyNotSent", W, "proxy-status",
          "istiod has not sent {types} to proxy {proxy}",
          "Listeners or clusters requested but never sent (istioctl: NOT SENT); types a proxy never subscribed "
          "to are IGNORED, not NOT SENT."),
    _code("MB2004", "ProxyVersionUnsupported", W, "proxy-status",
          "Proxy {proxy} runs Istio {proxy_version} but its istiod {istiod} runs {istiod_version}: outside "
          "Istio's supported skew ({why})",
          "Compared with the istiod the proxy is connected to: istiod may be one minor ahead, never behind "
          "(istio.io supported-releases)."),
    _code("MB2005", "IstiodUnreachable", E, "proxy-status",
          "Cannot read sync status from istiod at {endpoint}: {reason}",
          "The /debug/syncz endpoint did not answer."),
    _code("MB2006", "ZtunnelConfigRejected", E, "proxy-status",
          'ztunnel {proxy} rejected the {types} config istiod pushed (istioctl: ERROR): ztunnel says "{error}"',
          "ztunnel NACKed workload or authorization config; never restart ztunnel for it (it carries every "
          "ambient pod on its node)."),
    _code("MB2007", "ZtunnelNotSynced", W, "proxy-status",
          "ztunnel {proxy} is not in sync with istiod for {types} ({states})",
          "A ztunnel's WDS/WADS is stale or was never sent; its CDS/LDS/RDS/EDS are IGNORED (it never asks)."),
    _code("MB2008", "ZtunnelVersionUnsupported", W, "proxy-status",
          "ztunnel {proxy} runs Istio {proxy_version} but its istiod {istiod} runs {istiod_version}: outside "
          "the supported skew ({why})",
          "ztunnel 1.x works with istiod 1.x and 1.x+1; upgrade node by node, never by deleting ztunnel pods."),
    _code("MB2009", "ProxyVersionBehindIstiod", I, "proxy-status",
          "{what} {proxy} runs Istio {proxy_version}, one minor behind its istiod {istiod} ({istiod_version}); "
          "supported while the upgrade finishes",
          "Supported skew (istiod one minor ahead); patch differences are not reported."),
    # One bad resource makes every proxy it applies to reject the same push (commands/checks/rejections.py).
    _code("MB2012", "SameConfigRejectedByProxies", E, "proxy-status",
          '{proxies} the same {types} config from istiod: "{error}"; produced by {source}',
          "Identical rejections grouped into one cause, naming the EnvoyFilter, Gateway or Sidecar behind them."),
    # istiod's push health from /metrics (commands/checks/push_health.py).
    _code("MB2013", "ListenerConflicts", W, "proxy-status",
          "istiod {origin_name} dropped {count} listeners in its last push because services claim the same port "
          "({kinds}); traffic for the losers reaches the winners' listeners",
          "pilot_conflict_* gauges above 0 (pilot/pkg/model/push_context.go)."),
    _code("MB2014", "PushQueueBacklog", W, "proxy-status",
          "Proxies wait in istiod {origin_name}'s push queue {p99} s at p99 since it started, beyond the {ceiling} s "
          "debounce ceiling: config reaches proxies late",
          "pilot_proxy_queue_time p99 above PILOT_DEBOUNCE_MAX (pilot/pkg/xds/monitoring.go)."),
    # istio.io/latest/docs/ops/diagnostic-tools/proxy-cmd/: a proxy missing from proxy-status is connected to no
    # istiod; it serves stale config and gets no new certificate (commands/checks/disconnected.py).
    _code("MB2015", "ProxiesNotConnected", W, "proxy-status",
          "{count} of {total} running proxies are connected to no istiod ({pods}): they keep their last config "
          "and stop renewing their certificates",
          "Running sidecars (past a 2-minute grace) that no istiod's /debug/syncz lists, while others are listed."),
    _code("MB2016", "IstiodUnreachableFromProxies", E, "proxy-status",
          "None of the {count} running proxies is connected to istiod ({pods}): istiod answers meshbot but the data "
          "plane cannot reach it, so no config or certificate reaches any proxy",
          "Every running sidecar in scope is missing from every istiod's /debug/syncz (port 15012 blocked, a broken "
          "istiod Service, a revision with no istiod)."),
    _code("MB2010", "IstiodVersionUnknown", I, "proxy-status",
          "Version skew not checked for {count} proxies of istiod {istiod}: {reason}",
          "Neither istiod's /version on :15014 nor its image tag gave a version."),
    _code("MB3001", "CertificateExpired", E, "certs",
          "{what} expired {ago} ago (notAfter {not_after})",
          "The certificate is past its notAfter date."),
    _code("MB3002", "CertificateExpiresVerySoon", E, "certs",
          "{what} expires in {left} (notAfter {not_after})",
          "Inside the error threshold (default 7 days)."),
    _code("MB3003", "CertificateExpiresSoon", W, "certs",
          "{what} expires in {left} (notAfter {not_after})",
          "Inside the warning threshold (default 30 days)."),
    _code("MB3004", "CertificateExpiryNotice", I, "certs",
          "{what} expires in {left} (notAfter {not_after})",
          "Inside the notice threshold (default 90 days)."),
    _code("MB3005", "CertificateNotYetValid", E, "certs",
          "{what} is not valid before {not_before}; check clock skew",
          "notBefore is in the future."),
    _code("MB3006", "WorkloadCertificateNotRotated", W, "certs",
          "{what} is {percent}% through its {lifetime} lifetime and expires in {left}; istio-agent rotates at "
          "half-life, so it cannot get a new one from istiod",
          "A short-lived workload certificate past 75% of its lifetime (not judged by the day thresholds)."),
    _code("MB3010", "RootCertMismatch", E, "certs",
          "The istio-ca-root-cert in namespace {namespace} does not contain the mesh root CA "
          "(fingerprint {expected}); workloads there will fail mTLS",
          "A namespace's root ConfigMap differs from the CA's root."),
    _code("MB3011", "RootCertMissing", W, "certs",
          "Namespace {namespace} has injected pods but no istio-ca-root-cert ConfigMap",
          "istiod has not written the root ConfigMap to an injected namespace."),
    _code("MB3012", "GatewayCredentialUnavailable", E, "certs",
          'Gateway {gateway} references credentialName "{credential}" but {reason}',
          "The gateway TLS secret is missing, unreadable or has no certificate."),
    _code("MB3013", "CertificateUnparsable", W, "certs",
          "{what} could not be parsed as PEM X.509: {reason}",
          "A PEM bundle could not be parsed."),
    _code("MB3014", "WorkloadCertificateMissing", E, "certs",
          "Envoy in {pod} has no workload certificate loaded; mTLS to and from it fails",
          "Envoy /certs shows no certificate chain."),
    _code("MB3015", "CaExpiryFromIstiod", I, "certs",
          "istiod reports the {what} expires {when}",
          "Expiry read from istiod's citadel_server_* metrics (no secret access needed)."),
    # istio pilot/pkg/bootstrap/istio_ca.go checkCABundleCompleteness: a partial cacerts stops istiod's CA.
    _code("MB3016", "CaBundleIncomplete", E, "certs",
          "cacerts in {namespace} lacks {files} ({layout} layout); istiod refuses an incomplete bundle "
          "and cannot start its CA",
          "The plugged-in cacerts Secret misses a file istiod requires in its layout."),
    # istio_ca.go createIstioCA: with a complete cacerts, istio-ca-secret is never loaded.
    _code("MB3017", "CaSecretUnused", I, "certs",
          "{secret} holds a root {subject} that {state}, but istiod does not use it: it signs with {used}",
          "A leftover CA Secret istiod ignores; its expiry does not affect the mesh."),
    _code("MB3018", "SupersededRootInBundle", I, "certs",
          "{what} {state}, but the trust bundle also holds {successor} (valid until {successor_not_after}), "
          "which anchors trust; remove the old root after the rotation completes",
          "An old root kept in the bundle during a root rotation; a valid root anchors trust."),
    # pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go writes the whole bundle everywhere.
    _code("MB3019", "RootBundlePartial", W, "certs",
          "The istio-ca-root-cert in namespace {namespace} holds the current mesh root but lacks the valid "
          "root(s) {lacking} of the mesh's trust bundle; workloads there cannot verify peers chaining to them",
          "A namespace's root ConfigMap is an older copy of the mesh's multi-root bundle."),
    # security/pkg/server/ca/monitoring.go: citadel_server_csr_count, citadel_server_success_cert_issuance_count
    # and the per-cause error counters (csr_sign_err_count, csr_parsing_err_count, id_extraction_err_count,
    # authentication_failure_count) are cumulative since istiod started.
    _code("MB3020", "CaSigningFailing", E, "certs",
          "istiod's CA in {pod} failed {errors} of {requests} certificate requests since it started ({causes}); "
          "new pods get no workload certificate while it fails",
          "citadel_server_* error counters from istiod's /metrics: the mesh CA does not sign CSRs."),
    # Rejected = upstream_rq_pending_overflow, upstream_rq_active_overflow or upstream_cx_pool_overflow
    # above 0 (envoyproxy/envoy docs/root/configuration/upstream/cluster_manager/cluster_stats.rst); a
    # breaker gauge at 1 alone is MB4009/MB4010.
    _code("MB4001", "CircuitBreakerRejectedRequests", E, "envoy",
          "Envoy in {pod}: circuit breaking rejected {rejected} requests to {service} with a local 503 "
          "({overflows}); {state}",
          "Overflow counters show requests refused by a circuit breaker (503 UO)."),
    _code("MB4002", "UpstreamErrorShareHigh", E, "envoy",
          "Envoy in {pod}: {percent}% of requests to {service} failed with 5xx ({errors} of {total}; by response "
          "flag: {breakdown})",
          "5xx share at or above the threshold (default 10%), counting requests that never got a connection "
          "(UH, UF, UO), which upstream_rq_total leaves out."),
    _code("MB4003", "RetryStorm", W, "envoy",
          "Envoy in {pod}: {retries} retries for {total} requests to {service} ({percent}%); a retry storm "
          "amplifies the outage",
          "upstream_rq_retry at or above the threshold share of requests (default 20%)."),
    _code("MB4004", "EnvoyMemoryHigh", W, "envoy",
          "Envoy in {pod} uses {memory} of memory (warning above {threshold})",
          "Above the warning threshold (default 300 MB)."),
    _code("MB4005", "EnvoyMemoryCritical", E, "envoy",
          "Envoy in {pod} uses {memory} of memory (critical above {threshold}); restart it or trim its config",
          "Above the critical threshold (default 500 MB)."),
    _code("MB4006", "EnvoyAdminUnreachable", E, "envoy",
          "Cannot read Envoy admin of {pod} at {endpoint}: {reason}",
          "The admin API (port 15000) did not answer."),
    _code("MB4007", "EnvoyTooManyStats", W, "envoy",
          "Envoy in {pod} exports {count} stats; above {threshold} they drive memory growth "
          "(limit them with proxyStatsMatcher)",
          "Stats count above the threshold (default 50,000)."),
    # MB4008-MB4012: envoyproxy/envoy cluster_stats.rst and intro/arch_overview/upstream/circuit_breaking.rst;
    # MB4012: istio/istio pkg/bootstrap/config.go and https://istio.io/latest/docs/ops/configuration/telemetry/envoy-stats/
    _code("MB4008", "RetriesCutByCircuitBreaker", W, "envoy",
          "Envoy in {pod}: {count} retries to {service} were not attempted because the retry circuit breaker "
          "was full; callers got the failed answer",
          "upstream_rq_retry_overflow above 0: max_retries or the retry budget stopped retries."),
    _code("MB4009", "ConnectionLimitAtCapacity", I, "envoy",
          "Envoy in {pod}: the {breaker} circuit breaker for {service} is at capacity but rejected nothing; "
          "new requests wait for a free connection",
          "cx_open is 1 and no overflow counter grew (e.g. one idle keep-alive connection under "
          "maxConnections 1)."),
    _code("MB4010", "RequestLimitAtCapacity", W, "envoy",
          "Envoy in {pod}: the {breaker} circuit breaker for {service} is at capacity but rejected nothing "
          "yet; {consequence}",
          "rq_open, rq_pending_open, rq_retry_open or cx_pool_open is 1 and no request overflowed yet."),
    _code("MB4011", "ConnectionLimitDelayedRequests", I, "envoy",
          "Envoy in {pod}: the max_connections circuit breaker for {service} refused {count} new connections; "
          "requests waited for a connection but none was rejected",
          "upstream_cx_overflow above 0 with no request overflow."),
    _code("MB4012", "ClusterStatsNotExported", I, "envoy",
          "Envoy in {pod} exports no upstream stats for {count} of its clusters (Istio's default "
          "proxyStatsMatcher): not checked there are circuit breakers (UO), no-healthy-upstream counts (UH), "
          "TLS failure causes, retries (URX), the 5xx share, no route (NR) and no cluster (NC); host health, "
          "connect failures and timeouts were read from /clusters",
          "cluster_manager.active_clusters counts service clusters, but /stats has no cluster.<name>.* "
          "counters for any of them."),
    # MB4013-MB4027: one code per row of the response-flag table, commands/checks/envoy/flags.py (Envoy's
    # access_log/usage.rst response flags, cluster_stats.rst, admin.rst /clusters, rbac_filter.rst,
    # listeners/stats.rst TLS statistics, mgmt_server.rst xDS subscription statistics); docs/response-flags.md.
    _code("MB4013", "NoHealthyUpstream", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} found no healthy upstream (UH){detail}; probable cause: "
          "{cause}",
          "503 UH: upstream_cx_none_healthy, or every host ejected/unready/absent in /clusters."),
    _code("MB4014", "UpstreamConnectFailure", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} failed to connect (UF{detail}); probable cause: {cause}",
          "503 UF without a TLS cause: upstream_cx_connect_fail / connect_timeout, per-host cx_connect_fail."),
    _code("MB4015", "UpstreamTlsFailure", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} failed the TLS handshake{detail} (UF); probable cause: "
          "{cause}",
          "503 UF from ssl.fail_verify_error (untrusted root), fail_verify_san (wrong identity) or "
          "connection_error (no mTLS peer)."),
    _code("MB4016", "RetriesExhausted", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} failed after their last retry (URX){detail}; probable cause: "
          "{cause}",
          "upstream_rq_retry_limit_exceeded."),
    _code("MB4017", "UpstreamTimeout", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} timed out (UT, 504){detail}; probable cause: {cause}",
          "upstream_rq_timeout or per-host rq_timeout."),
    _code("MB4018", "UpstreamConnectionTerminated", E, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} were closed by the upstream with a request in flight "
          "(UC){detail}; probable cause: {cause}",
          "upstream_cx_destroy_remote_with_active_rq."),
    _code("MB4019", "CallerDisconnected", W, "envoy",
          "Envoy in {pod}: {count} {unit} to {service} were abandoned by the caller before the answer "
          "(DC){detail}; probable cause: {cause}",
          "Per-host rq_total above rq_success + rq_error + rq_active in /clusters."),
    _code("MB4020", "NoRoute", E, "envoy",
          "Envoy in {pod}: {count} requests on {listener} matched no route (NR, 404); probable cause: {cause}",
          "http.<listener>.no_route."),
    _code("MB4021", "NoCluster", E, "envoy",
          "Envoy in {pod}: {count} requests on {listener} were routed to a destination it has no cluster for "
          "(NC, 503); probable cause: {cause}",
          "http.<listener>.no_cluster."),
    _code("MB4022", "RbacDenied", E, "envoy",
          "Envoy in {pod} denied {count} requests on {listener} with 403 RBAC: access denied ({allowed} allowed); "
          "probable cause: {cause}",
          "rbac.denied of an enforced policy; the advice is never PERMISSIVE mTLS or a restart."),
    _code("MB4023", "RbacDryRunWouldDeny", I, "envoy",
          "Envoy in {pod}: a dry-run AuthorizationPolicy would have denied {count} requests on {listener}; "
          "nothing was denied",
          "shadow_denied only (istio.io/dry-run): not an outage."),
    _code("MB4024", "RegistryOnlyDropped", E, "envoy",
          "Envoy in {pod}: {count} {what} on {listener} (outboundTrafficPolicy REGISTRY_ONLY); probable cause: "
          "{cause}",
          "BlackHoleCluster connections, or direct 502s on an outbound port whose routes hold block_all."),
    _code("MB4025", "ConfigUpdateRejected", W, "envoy",
          "Envoy in {pod} rejected {count} updates of its {what} from istiod since it started and kept its "
          "previous config; probable cause: {cause}",
          "cluster_manager.cds / listener_manager.lds update_rejected; proxy-status says if the latest is rejected."),
    _code("MB4026", "NoTrafficSeen", I, "envoy",
          "Envoy in {pod}: no traffic through it since it started ({what}), so its health was not judged",
          "Silence is earned: without traffic the check cannot say the mesh path works."),
    _code("MB4027", "HostHealthNotRead", I, "envoy",
          "Envoy in {pod}: host health and outlier state were not checked: {reason}",
          "/clusters?format=json could not be read."),
    _code("MB4028", "ExternalAuthorizationDenied", E, "envoy",
          "Envoy in {pod}: {count} requests on {listener} were {what} (UAEX, CUSTOM AuthorizationPolicy); "
          "probable cause: {cause}",
          "ext_authz.denied (the provider said no) or ext_authz.error (it did not answer; failOpen false denies)."),
    _code("MB4029", "ExternalDestinationFailing", E, "envoy",
          "Envoy in {pod}: {count} calls leaving the mesh through its ALLOW_ANY passthrough failed to connect or "
          "timed out ({destinations}); probable cause: {cause}",
          "PassthroughCluster connect failures and timeouts; /clusters names each destination address."),
    _code("MB4030", "LocalRateLimitRejecting", E, "envoy",
          "Envoy in {pod}: {count} of {total} requests were refused 429 by its local rate limit {limiter} (RL); "
          "probable cause: {cause}",
          "<stat_prefix>.http_local_rate_limit.rate_limited: an EnvoyFilter's token bucket smaller than the traffic."),
    _code("MB4031", "FaultInjectedBySidecar", E, "envoy",
          "Envoy in {pod}: {count} of {total} requests on {listener} were {what} by fault injection (FI/DI); "
          "probable cause: {cause}",
          "http.<listener>.fault.aborts_injected / delays_injected: a VirtualService fault (traffic-policy MB5001-MB5003 "
          "names it)."),
    _code("MB4032", "StreamIdleTimeout", E, "envoy",
          "Envoy in {pod}: {count} of {total} requests on {listener} were ended by a stream idle timeout (SI, 504 or "
          "408); probable cause: {cause}",
          "http.<listener>.downstream_rq_idle_timeout: a stream_idle_timeout or route idle_timeout, which Istio "
          "leaves off on sidecars, ends quiet streams."),
    _code("MB4033", "GlobalRateLimitRejecting", E, "envoy",
          "Envoy in {pod}: {count} of {total} requests to {service} were refused 429 by the global rate limit "
          "service (RL); probable cause: {cause}",
          "cluster.<c>.ratelimit.over_limit: the rate limit service (envoy.filters.http.ratelimit) said over limit."),
    _code("MB4034", "RateLimitServiceErrorDenies", E, "envoy",
          "Envoy in {pod}: {count} of {total} requests to {service} were refused because the global rate limit "
          "service did not answer (RLSE, 500 with failure_mode_deny); probable cause: {cause}",
          "cluster.<c>.ratelimit.error above failure_mode_allowed: failure_mode_deny turns the service's failure "
          "into the caller's."),
    _code("MB4035", "RateLimitServiceErrorLetThrough", W, "envoy",
          "Envoy in {pod}: the global rate limit service did not answer for {count} of {total} requests to "
          "{service}; they were let through unlimited (failure_mode_deny false)",
          "cluster.<c>.ratelimit.failure_mode_allowed: no outage, but the limit protects nothing while it lasts."),
    # MB5xxx traffic-policy (commands/checks/traffic): configuration that fails requests by design.
    # VirtualService fault injection (istio.io/latest/docs/reference/config/networking/virtual-service/
    # #HTTPFaultInjection; istio/istio pilot/pkg/networking/core/route/route.go TranslateFault): Envoy's fault
    # filter answers locally with response flag FI (abort) or DI (delay).
    _code("MB5001", "FaultInjectionAbortsAllRequests", E, "traffic-policy",
          "{virtual_service} aborts {percent} of every request to {hosts} with HTTP {status} (route {route}, "
          "Envoy response flag FI): fault injection is on for all callers",
          "A VirtualService route with no match and fault.abort above 0%: the sidecar answers the error itself."),
    _code("MB5002", "FaultInjectionAbortsMatchingRequests", W, "traffic-policy",
          "{virtual_service} aborts {percent} of requests to {hosts} matching {match} with HTTP {status} "
          "(route {route}, Envoy response flag FI)",
          "fault.abort on a route limited by a match (a header, a user): a test left on for some callers."),
    _code("MB5003", "FaultInjectionDelaysRequests", W, "traffic-policy",
          "{virtual_service} delays {percent} of requests to {hosts}{matching} by {delay} (route {route}, "
          "Envoy response flag DI)",
          "fault.delay above 0%: callers see added latency and, past their timeouts, 504s."),
    # istio.io/latest/docs/ops/common-problems/network-issues/#503-errors-after-setting-destination-rule:
    # a DestinationRule tls mode that contradicts the server's PeerAuthentication fails every connection.
    _code("MB5010", "PlaintextToStrictMtls", E, "traffic-policy",
          "{destination_rule} sends plaintext (tls mode DISABLE) to {host} port {port}, but {pods} accept "
          "only mutual TLS ({policy}): every connection is reset (503 UC or UF)",
          "DestinationRule tls DISABLE towards workloads a STRICT PeerAuthentication protects."),
    _code("MB5011", "MutualTlsToPodsWithoutSidecar", E, "traffic-policy",
          "{destination_rule} sends Istio mutual TLS (tls mode ISTIO_MUTUAL) to {host} port {port}, but none of "
          "its pods ({pods}) has a sidecar to answer it: every handshake fails (503 UF)",
          "DestinationRule ISTIO_MUTUAL towards a service whose pods are outside the mesh."),
    # Several DestinationRules for one host: istiod uses one per caller namespace (caller's namespace, Service's,
    # root; istio/istio pilot/pkg/model/push_context.go destinationRule) and merges none across namespaces.
    _code("MB5020", "DestinationRuleNotUsed", W, "traffic-policy",
          "{destination_rule} does not apply to callers of {host} in {callers}: {why}; so {effects}",
          "Another DestinationRule for the same host wins for these callers (or a merge keeps the older rule's "
          "trafficPolicy): the settings written here do nothing for them."),
    _code("MB5021", "WildcardDestinationRuleNotInherited", I, "traffic-policy",
          "{destination_rule} ({wildcard}) does not apply to {count} with a more specific rule ({hosts}): "
          "nothing of a broader rule is inherited, so for their callers {effects}",
          "A mesh-wide or namespace-wide wildcard rule stops at every host with its own rule (no field inheritance "
          "since Istio 1.20)."),
    # MB6xxx telemetry (commands/telemetry): Prometheus with Istio's standard metrics
    # (https://istio.io/latest/docs/reference/config/metrics/), istiod's pilot_*/citadel_* metrics
    # (pilot/pkg/xds/monitoring.go, security/pkg/server/ca/monitoring.go) and Kubernetes Warning Events.
    _code("MB6001", "PrometheusNotConfigured", I, "telemetry",
          "No Prometheus configured (MESHBOT_PROMETHEUS_URL): {missing} not checked",
          "Without Prometheus meshbot diagnoses as before and says what it could not see."),
    _code("MB6002", "PrometheusUnavailable", I, "telemetry",
          "Prometheus at {endpoint} did not answer ({reason}): {missing} not checked",
          "Slow (past MESHBOT_PROMETHEUS_TIMEOUT), down, refusing the query or the token; the rest of the "
          "diagnosis still ran."),
    _code("MB6003", "PrometheusTooManySeries", I, "telemetry",
          "Prometheus answered {count} series for {what}, more than the {limit} meshbot reads: {missing} not "
          "checked; narrow the question to a namespace",
          "An answer over MESHBOT_PROMETHEUS_MAX_SERIES is refused rather than read whole."),
    _code("MB6004", "IstioMetricsMissing", I, "telemetry",
          "Prometheus at {endpoint} has none of Istio's standard metrics (istio_requests_total, istio_tcp_*){scope} "
          "between {start} and {end}: failing edges and onsets are unknown",
          "The sidecars' :15020/stats/prometheus is not scraped (or Telemetry disabled the metrics)."),
    _code("MB6010", "EdgeFailing", E, "telemetry",
          "{edge}: {errors} of {total} requests failed ({percent}%) {since}: {codes}",
          "Failed requests (5xx, 0, 401, 403, 429) on a source -> destination edge in Istio's metrics, with "
          "the onset where its error ratio left its baseline."),
    _code("MB6011", "TcpEdgeFailing", W, "telemetry",
          "{edge}: {count} TCP connections closed with Envoy response flags {flags} in the last {window}",
          "istio_tcp_connections_closed_total with a response flag (UF, UH, …): TCP traffic failing."),
    _code("MB6020", "IstiodMemoryRising", W, "telemetry",
          "istiod {pod} memory rose from {first} to {peak} in the last {window}",
          "Working set (or resident memory) growing before an OOM kill: config size or a push storm."),
    _code("MB6021", "ProxiesRejectConfig", W, "telemetry",
          "Proxies rejected {count} configuration pushes from istiod in the last {window} "
          "(pilot_total_xds_rejects)",
          "Envoy NACKed xDS; proxy-status names the proxies and Envoy's error."),
    _code("MB6022", "ConfigConvergenceSlow", W, "telemetry",
          "99% of configuration pushes took up to {seconds} s to reach proxies in the last {window} "
          "(pilot_proxy_convergence_time; meshbot warns above {threshold} s)",
          "istiod is slow to push: large config, many proxies or CPU starvation."),
    _code("MB6023", "CsrSigningErrors", E, "telemetry",
          "istiod's CA failed to sign {count} certificate requests in the last {window} "
          "(citadel_server_csr_sign_err_count); new and rotating workloads get no certificate",
          "The mesh CA errors while signing: a broken or expired CA certificate or key."),
    _code("MB6030", "WarningEvents", W, "telemetry",
          "{reason} on {object} ({count}×, last {last_seen}): {message}",
          "Kubernetes Warning Events for the workloads in scope and the Istio namespace, one line per reason "
          "and object."),
    # MB7xxx AuthorizationPolicy (commands/authz): an ALLOW policy without rules becomes an Envoy RBAC policy
    # that never matches (istio/istio pilot/pkg/security/authz/builder/builder.go rbacPolicyMatchNever), and
    # with any ALLOW policy applying, a request no ALLOW rule matches gets 403 "RBAC: access denied"
    # (https://istio.io/latest/docs/reference/config/security/authorization-policy/).
    _code("MB7001", "AllowPolicyDeniesEverything", E, "analyze",
          "ALLOW policy {policy} has no rules: it denies every request to {workloads} (403 RBAC: access denied)",
          "An enforced ALLOW AuthorizationPolicy with no rules, and no other ALLOW policy with rules on the same "
          "workloads."),
    # An empty rule ({}) matches any request (istio.io authorization-policy reference, "rules"); DENY is
    # evaluated before ALLOW, so nothing can allow around it.
    _code("MB7002", "DenyPolicyMatchesEverything", E, "analyze",
          "DENY policy {policy} rule {rule} matches every request: {workloads} answer 403 RBAC: access denied "
          "to every caller",
          "An enforced DENY AuthorizationPolicy with a rule that has no from, to or when."),
    # pilot/pkg/security/trustdomain/bundle.go: only cluster.local, the trust domain and its aliases are
    # rewritten to this mesh's identities; pilot/pkg/security/authz/model/generator.go matches principals
    # and service accounts against the peer's SPIFFE URI spiffe://<td>/ns/<ns>/sa/<sa>.
    _code("MB7003", "PolicySourceCannotMatch", W, "analyze",
          "{action} policy {policy} rule {rule} names {field} {value}, which {reason}: {consequence}",
          "A principal or service account no workload of this mesh presents (other trust domain, missing "
          "namespace, unused service account, malformed)."),
    _code("MB7004", "RbacDenialExplained", E, "envoy",
          "Envoy in {pod} {seen} with 403 RBAC: access denied; {action} policy {policy} {why}",
          "A workload's RBAC denials traced to the AuthorizationPolicy that causes them "
          "(commands.authz.explain.denial_findings)."),
    # https://istio.io/latest/docs/tasks/security/authorization/authz-tcp/ and pilot/pkg/security/authz/model/
    # model.go checkError: on TCP an ALLOW rule with HTTP-only fields is skipped, a DENY rule drops them.
    _code("MB7005", "PolicyHttpFieldsOnTcpPort", W, "analyze",
          "{action} policy {policy} rule {rule} uses {fields}, which Envoy cannot read on TCP port {port} of "
          "Service {service}; {consequence}",
          "An ALLOW or DENY rule with methods, paths, hosts, requestPrincipals or request.* conditions on a "
          "workload port Istio proxies as TCP."),
]}

ALL_CODES: dict[str, Code] = {**ISTIO_CODES, **MESHBOT_CODES}


def finding(
    code: str,
    *,
    origin: str,
    evidence: Mapping[str, Any] | None = None,
    remediation: Remediation | None = None,
    reference: str | None = None,
    check: str | None = None,
    **args: Any,
) -> Finding:
    """Build a finding from a catalogue code; ``args`` fill the message template."""
    entry = ALL_CODES[code]
    return Finding(
        check=check or entry.check,
        code=entry.code,
        level=entry.level,
        message=entry.template.format(**args),
        origin=origin,
        evidence=dict(evidence or {}),
        remediation=remediation,
        reference=reference,
        documentation_url=entry.documentation_url,
    )


def markdown_table(codes: Mapping[str, Code] = MESHBOT_CODES) -> str:
    """The table of meshbot codes in docs/codes.md."""
    rows = ["| Code | Name | Level | Check | Meaning |", "|---|---|---|---|---|"]
    for entry in codes.values():
        rows.append(f"| <a id=\"{entry.code.lower()}\"></a>{entry.code} | {entry.name} | {entry.level} "
                    f"| {entry.check} | {entry.description} |")
    return "\n".join(rows)
