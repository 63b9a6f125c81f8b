"""Istio's analyzer test grid, run against meshbot: expected vs found vs false messages per case.

The cases, inputs and expected (code, origin) pairs are transcribed from istio/istio
``pkg/config/analysis/analyzers/analyzers_test.go`` (``testGrid``); the YAML is copied
into ``tests/data/analyze/istio/``.  Istio's harness runs one analyzer per case over
``istioctl analyze``'s files-only input, which includes the default ingress gateway
(``sa.AddDefaultResources()``), so this grid reads the files through ``FileSource``
exactly like ``meshbot analyze -f``.

Run it: ``.venv/bin/python -m tests.analyze.grid`` (``-v`` lists each missed/false message).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from commands.analyze import ANALYZE_KINDS, run_analyzers
from commands.checks.registry import CheckContext
from commands.cluster.sources.files import FileSource
from commands.findings import Finding
from commands.resources.kinds import is_namespaced

DATA = Path(__file__).resolve().parent.parent / "data" / "analyze" / "istio"

# Istio analyzer -> the meshbot analyzers that implement its messages.
ANALYZER_MAP: dict[str, tuple[str, ...]] = {
    "gateway.IngressGatewayPortAnalyzer": ("gateway.SelectorAnalyzer", "gateway.IngressGatewayPortAnalyzer"),
    "gateway.SecretAnalyzer": ("gateway.SelectorAnalyzer", "gateway.SecretAnalyzer"),
    "gateway.ConflictingGatewayAnalyzer": ("gateway.ConflictingGatewayAnalyzer",),
    "gateway.CertificateAnalyzer": ("gateway.CertificateAnalyzer",),
    "injection.Analyzer": ("injection.Analyzer",),
    "injection.ImageAnalyzer": ("injection.ImageAnalyzer",),
    "service.PortNameAnalyzer": ("service.PortNameAnalyzer", "service.ExternalNamePortNameAnalyzer"),
    "sidecar.SelectorAnalyzer": ("sidecar.SelectorAnalyzer", "sidecar.DefaultSelectorAnalyzer"),
    "virtualservice.ConflictingMeshGatewayHostsAnalyzer": ("virtualservice.ConflictingMeshGatewayHostsAnalyzer",),
    "virtualservice.DestinationHostAnalyzer": ("virtualservice.DestinationHostAnalyzer",),
    "virtualservice.DestinationRuleAnalyzer": ("virtualservice.DestinationRuleAnalyzer",),
    "virtualservice.GatewayAnalyzer": ("virtualservice.GatewayAnalyzer",),
    "schema.ValidationAnalyzer.VirtualService": ("virtualservice.MatchAnalyzer",),
    "deployment.ServiceAssociationAnalyzer": ("deployment.ServiceAssociationAnalyzer",),
    "deployment.ApplicationUIDAnalyzer": ("deployment.ApplicationUIDAnalyzer",),
    "authz.AuthorizationPoliciesAnalyzer": ("auth.AuthorizationPoliciesAnalyzer",),
    "destinationrule.CaCertificateAnalyzer": ("destinationrule.CaCertificateAnalyzer",),
    "destinationrule.PodNotSelectedAnalyzer": ("destinationrule.UnknownHostAnalyzer",
                                               "destinationrule.SubsetSelectPodAnalyzer"),
    "serviceentry.ProtocolAddressesAnalyzer": ("serviceentry.ProtocolAddressesAnalyzer",),
    "serviceentry.ConflictingServiceEntryProtocolAnalyzer": ("serviceentry.ConflictingServiceEntryProtocolAnalyzer",),
    "envoyfilter.EnvoyPatchAnalyzer": ("envoyfilter.EnvoyPatchAnalyzer",),
    "telemetry.SelectorAnalyzer": ("telemetry.SelectorAnalyzer",),
    "conditions.ConditionAnalyzer": ("conditions.ConditionAnalyzer",),
    "k8sgateway.SelectorAnalyzer": ("k8sgateway.SelectorAnalyzer",),
    "webhook.Analyzer": ("webhook.Analyzer",),
    "injection.ImageAutoAnalyzer": ("injection.ImageAutoAnalyzer",),
    "virtualservice.JWTClaimRouteAnalyzer": ("virtualservice.JWTClaimRouteAnalyzer",),
    "externalcontrolplane.ExternalControlPlaneAnalyzer": ("externalcontrolplane.ExternalControlPlaneAnalyzer",),
}


@dataclass(frozen=True)
class Case:
    name: str
    files: tuple[str, ...]
    analyzer: str
    expected: tuple[tuple[str, str], ...]
    mesh_config: str | None = None


def case(name: str, files: str | tuple[str, ...], analyzer: str, *expected: tuple[str, str],
         mesh_config: str | None = None) -> Case:
    return Case(name, (files,) if isinstance(files, str) else files, analyzer, expected, mesh_config)


GW_PORT, VS_GW = "gateway.IngressGatewayPortAnalyzer", "virtualservice.GatewayAnalyzer"
CONFLICT, CA = "gateway.ConflictingGatewayAnalyzer", "destinationrule.CaCertificateAnalyzer"
EF, SE = "envoyfilter.EnvoyPatchAnalyzer", "serviceentry.ProtocolAddressesAnalyzer"
SE_CONFLICT, UID = "serviceentry.ConflictingServiceEntryProtocolAnalyzer", "deployment.ApplicationUIDAnalyzer"
ECP = "externalcontrolplane.ExternalControlPlaneAnalyzer"
DR_PODS, INJECTOR = "destinationrule.PodNotSelectedAnalyzer", "common/sidecar-injector-configmap.yaml"
NOT_FOUND_GW = [("IST0132", f"VirtualService default/{n}") for n in (
    "testing-service-02-test-01", "testing-service-02-test-02", "testing-service-02-test-03",
    "testing-service-03-test-04")]

GRID: tuple[Case, ...] = (
    case("gatewayNoWorkload", "gateway-no-workload.yaml", GW_PORT, ("IST0101", "Gateway httpbin-gateway")),
    case("gatewayBadPort", "gateway-no-port.yaml", GW_PORT, ("IST0162", "Gateway httpbin-gateway")),
    case("gatewayCorrectPort", "gateway-correct-port.yaml", GW_PORT),
    case("gatewayCustomIngressGateway", "gateway-custom-ingressgateway.yaml", GW_PORT),
    case("gatewayCustomIngressGatewayBadPort", "gateway-custom-ingressgateway-badport.yaml", GW_PORT,
         ("IST0162", "Gateway httpbin-gateway")),
    case("gatewayCustomIngressGatewayBadPortWithoutTarget", "gateway-custom-ingressgateway-badport-notarget.yaml",
         GW_PORT, ("IST0162", "Gateway httpbin-gateway")),
    case("gatewayCustomIngressGatewayTranslation", "gateway-custom-ingressgateway-translation.yaml", GW_PORT),
    case("gatewayServiceMatchPod", "gateway-custom-ingressgateway-svcselector.yaml", GW_PORT,
         ("IST0162", "Gateway httpbin8002-gateway")),
    case("gatewaySecret", "gateway-secrets.yaml", "gateway.SecretAnalyzer",
         ("IST0101", "Gateway defaultgateway-bogusCredentialName"), ("IST0101", "Gateway customgateway-wrongnamespace"),
         ("IST0101", "Gateway bogusgateway")),
    case("gatewaySecretValidations", "gateway-secrets-validation.yaml", "gateway.SecretAnalyzer",
         ("IST0161", "Gateway defaultgateway-invalid-keys"), ("IST0161", "Gateway defaultgateway-missing-keys"),
         ("IST0161", "Gateway defaultgateway-invalid-cert"), ("IST0161", "Gateway defaultgateway-expired")),
    case("conflicting gateways detect", "conflicting-gateways.yaml", CONFLICT,
         ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    case("gateways with different port are non-conflicting", "gateway-different-port.yaml", CONFLICT),
    case("conflicting gateways with multiple port declarations", "conflicting-gateways-multiple-ports.yaml", CONFLICT,
         ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    case("conflicting gateways detect by sub selector", "conflicting-gateways-subSelector.yaml", CONFLICT,
         ("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")),
    case("conflicting gateways detect: no port", "conflicting-gateways-invalid-port.yaml", CONFLICT),
    case("Analyze conflicting gateway with list type", "analyze-list-type.yaml", CONFLICT,
         ("IST0145", "Gateway alpha"), ("IST0145", "Gateway alpha-l"), ("IST0145", "Gateway beta-l")),
    case("certificate duplication in Gateway", "gateway-duplicate-certificate.yaml", "gateway.CertificateAnalyzer",
         ("IST0138", "Gateway istio-system/gateway-01-test-01"), ("IST0138", "Gateway istio-system/gateway-02-test-01"),
         ("IST0138", "Gateway istio-system/gateway-01-test-02"), ("IST0138", "Gateway default/gateway-01-test-03")),
    case("istioInjection", "injection.yaml", "injection.Analyzer",
         ("IST0102", "Namespace bar"), ("IST0103", "Pod default/noninjectedpod"), ("IST0123", "Namespace busted"),
         ("IST0123", "Namespace multi-ns-1"), ("IST0123", "Namespace multi-ns-2"), ("IST0123", "Namespace multi-ns-3")),
    case("istioInjectionEnableNamespacesByDefault", ("injection.yaml", "common/sidecar-injector-enabled-nsbydefault.yaml"),
         "injection.Analyzer",
         ("IST0148", "Namespace bar"), ("IST0103", "Pod default/noninjectedpod"), ("IST0123", "Namespace busted"),
         ("IST0123", "Namespace multi-ns-1"), ("IST0123", "Namespace multi-ns-2"), ("IST0123", "Namespace multi-ns-3")),
    case("istioInjectionProxyImageMismatch", ("injection-with-mismatched-sidecar.yaml", INJECTOR),
         "injection.ImageAnalyzer",
         ("IST0158", "Namespace enabled-namespace"), ("IST0158", "Namespace enabled-namespace-native")),
    case("injectionImageDistroless", ("injection-image-distroless.yaml", INJECTOR), "injection.ImageAnalyzer",
         ("IST0158", "Namespace enabled-namespace"), mesh_config="common/meshconfig.yaml"),
    case("injectionImageDistrolessNoMeshConfig", ("injection-image-distroless-no-meshconfig.yaml", INJECTOR),
         "injection.ImageAnalyzer"),
    case("istioInjectionProxyImageMismatchAbsolute",
         ("injection-with-mismatched-sidecar.yaml", "sidecar-injector-configmap-absolute-override.yaml"),
         "injection.ImageAnalyzer",
         ("IST0158", "Namespace enabled-namespace"), ("IST0158", "Namespace enabled-namespace-native")),
    case("istioInjectionProxyImageMismatchWithRevisionCanary",
         ("injection-with-mismatched-sidecar.yaml", "sidecar-injector-configmap-absolute-override.yaml",
          "sidecar-injector-configmap-with-revision-canary.yaml"), "injection.ImageAnalyzer",
         ("IST0158", "Namespace enabled-namespace"), ("IST0158", "Namespace enabled-namespace-native"),
         ("IST0158", "Namespace revision-namespace")),
    case("portNameNotFollowConvention", "service-no-port-name.yaml", "service.PortNameAnalyzer",
         ("IST0118", "Service my-namespace1/my-service1"), ("IST0118", "Service my-namespace1/my-service1"),
         ("IST0118", "Service my-namespace2/my-service2")),
    case("namedPort", "service-port-name.yaml", "service.PortNameAnalyzer"),
    case("unnamedPortInSystemNamespace", "service-no-port-name-system-namespace.yaml", "service.PortNameAnalyzer"),
    case("sidecarDefaultSelector", "sidecar-default-selector.yaml", "sidecar.SelectorAnalyzer",
         ("IST0111", "Sidecar ns2/has-conflict-2"), ("IST0111", "Sidecar ns2/has-conflict-1"),
         ("IST0167", "Sidecar ns-ambient/namespace-scoped"), ("IST0167", "Sidecar ns-ambient/pod-scoped")),
    case("sidecarSelector", "sidecar-selector.yaml", "sidecar.SelectorAnalyzer",
         ("IST0101", "Sidecar default/maps-to-nonexistent"), ("IST0101", "Sidecar other/maps-to-different-ns"),
         ("IST0110", "Sidecar default/dupe-1"), ("IST0110", "Sidecar default/dupe-2"),
         ("IST0110", "Sidecar default/overlap-1"), ("IST0110", "Sidecar default/overlap-2")),
    case("virtualServiceConflictingMeshGatewayHosts", "virtualservice_conflictingmeshgatewayhosts.yaml",
         "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
         *[("IST0109", f"VirtualService {n}") for n in (
             "team3/ratings", "team4/ratings", "foo/ratings", "bar/ratings", "foo/productpage",
             "foo/bogus-productpage", "team2/ratings")]),
    case("virtualServiceConflictingMeshGatewayHostsWithExportTo",
         "virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml",
         "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
         *[("IST0109", f"VirtualService {n}") for n in (
             "foo/productpage", "bar/productpage", "foo/productpage-c", "bar/productpage-c",
             "foo/productpage-d", "bar/productpage-d")]),
    case("virtualServiceDestinationHosts", "virtualservice_destinationhosts.yaml",
         "virtualservice.DestinationHostAnalyzer",
         ("IST0101", "VirtualService default/reviews-bogushost"), ("IST0101", "VirtualService default/reviews-bogushost"),
         ("IST0101", "VirtualService default/reviews-bookinfo-other"),
         ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
         ("IST0101", "VirtualService default/reviews-bogusport"),
         ("IST0112", "VirtualService default/reviews-2port-missing"),
         ("IST0101", "VirtualService istio-system/cross-namespace-details"),
         ("IST0101", "VirtualService hello/hello-export-to-bogus")),
    case("virtualServiceDestinationRules", "virtualservice_destinationrules.yaml",
         "virtualservice.DestinationRuleAnalyzer",
         ("IST0101", "VirtualService default/reviews-bogussubset"),
         ("IST0101", "VirtualService default/reviews-mirror-bogussubset")),
    case("virtualServiceGateways", "virtualservice_gateways.yaml", VS_GW,
         ("IST0101", "VirtualService httpbin-bogus"), ("IST0132", "VirtualService default/cross-test"),
         ("IST0132", "VirtualService httpbin-bogus"), ("IST0132", "VirtualService httpbin")),
    case("virtualServiceKubernetesGateways", "virtualservice_kubernetes_gateways.yaml", VS_GW,
         ("IST0132", "VirtualService default/my-vs-host-mismatch")),
    case("virtualServiceInternalGatewayRef", "virtualservice_internal_gateway_ref.yaml", VS_GW,
         ("IST0165", "VirtualService httpbin")),
    case("host not found in gateway", "virtualservice_host_not_found_gateway.yaml", VS_GW, *NOT_FOUND_GW),
    case("host not found in gateway (beta)", "virtualservice_host_not_found_gateway_beta.yaml", VS_GW, *NOT_FOUND_GW),
    case("host not found in gateway with ns", "virtualservice_host_not_found_gateway_with_ns_prefix.yaml", VS_GW,
         ("IST0132", "VirtualService default/testing-service-01-test-01")),
    case("host not found in gateway with ns (beta)", "virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml",
         VS_GW, ("IST0132", "VirtualService default/testing-service-01-test-01")),
    case("Route Rule no effect on Ingress", "virtualservice_route_rule_no_effects_ingress.yaml",
         "virtualservice.DestinationHostAnalyzer", ("IST0140", "VirtualService default/testing-service-01-test-01")),
    case("dupmatches", ("virtualservice_dupmatches.yaml", "virtualservice_overlappingmatches.yaml"),
         "schema.ValidationAnalyzer.VirtualService",
         ("IST0130", "VirtualService duplicate-match"), ("IST0130", "VirtualService foo/sample-foo-cluster01"),
         ("IST0131", "VirtualService almost-duplicate-match"), ("IST0131", "VirtualService duplicate-match"),
         ("IST0130", "VirtualService duplicate-tcp-match"), ("IST0130", "VirtualService duplicate-empty-tcp"),
         ("IST0131", "VirtualService almost-duplicate-tcp-match"), ("IST0131", "VirtualService duplicate-tcp-match"),
         ("IST0130", "VirtualService none/tls-routing"), ("IST0131", "VirtualService none/tls-routing-almostmatch"),
         ("IST0131", "VirtualService none/tls-routing"), ("IST0131", "VirtualService non-method-get"),
         ("IST0131", "VirtualService overlapping-in-single-match"),
         ("IST0131", "VirtualService overlapping-in-two-matches"),
         ("IST0131", "VirtualService overlapping-mathes-with-different-methods")),
    case("serviceMultipleDeployments", "deployment-multi-service.yaml", "deployment.ServiceAssociationAnalyzer",
         ("IST0116", "Deployment bookinfo/multiple-svc-multiple-prot"),
         ("IST0116", "Deployment bookinfo/multiple-without-port"),
         ("IST0137", "Deployment bookinfo/conflicting-ports")),
    case("deploymentMultiServicesInDifferentNamespace", "deployment-multi-service-different-ns.yaml",
         "deployment.ServiceAssociationAnalyzer"),
    case("serviceWithNoSelector", "deployment-service-no-selector.yaml", "deployment.ServiceAssociationAnalyzer"),
    case("Application Pod SecurityContext with UID 1337", "pod-sec-uid.yaml", UID, ("IST0144", "Pod pod-sec-uid")),
    case("Application Container SecurityContext with UID 1337", "pod-con-sec-uid.yaml", UID,
         ("IST0144", "Pod con-sec-uid")),
    case("Deployment Pod SecurityContext with UID 1337", "deployment-pod-sec-uid.yaml", UID,
         ("IST0144", "Deployment deploy-pod-sec-uid")),
    case("Deployment Container SecurityContext with UID 1337", "deployment-con-sec-uid.yaml", UID,
         ("IST0144", "Deployment deploy-con-sec-uid")),
    case("authorizationpolicies", "authorizationpolicies.yaml", "authz.AuthorizationPoliciesAnalyzer",
         ("IST0127", "AuthorizationPolicy istio-system/meshwide-httpbin-v1"),
         ("IST0127", "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide"),
         ("IST0127", "AuthorizationPolicy httpbin/httpbin-nopods"),
         ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
         ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
         ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
         ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-not-ns"),
         ("IST0127", "AuthorizationPolicy test-ambient/no-workload")),
    case("dr no cacert simple destination", "destinationrule-simple-destination.yaml", CA,
         ("IST0128", "DestinationRule db-tls")),
    case("dr no cacert mutual destination", "destinationrule-mutual-destination.yaml", CA,
         ("IST0128", "DestinationRule db-mtls")),
    case("dr no cacert simple port", "destinationrule-simple-port.yaml", CA, ("IST0129", "DestinationRule db-tls")),
    case("dr credentialname destination no selector", "destinationrule-simple-destination-credentialname.yaml", CA,
         ("IST0128", "DestinationRule db-tls")),
    case("dr credentialname destination selector", "destinationrule-simple-destination-credentialname-selector.yaml",
         CA),
    case("dr credentialname port no selector", "destinationrule-simple-port-credentialname.yaml", CA,
         ("IST0129", "DestinationRule db-tls")),
    case("dr credentialname port selector", "destinationrule-simple-port-credentialname-selector.yaml", CA),
    case("dr no cacert mutual port", "destinationrule-mutual-port.yaml", CA, ("IST0129", "DestinationRule db-mtls")),
    case("dr compound simple mutual", "destinationrule-compound-simple-mutual.yaml", CA,
         ("IST0128", "DestinationRule db-mtls"), ("IST0129", "DestinationRule db-mtls")),
    case("dr compound mutual simple", "destinationrule-compound-mutual-simple.yaml", CA,
         ("IST0129", "DestinationRule db-mtls"), ("IST0128", "DestinationRule db-mtls")),
    case("dr with both cacerts", "destinationrule-with-ca.yaml", CA),
    case("DestinationRuleWithFakeHost", "destinationrule-with-fake-host.yaml", DR_PODS,
         ("IST0174", "DestinationRule default/fake-host")),
    case("DestinationRuleSubsetsNotSelectPods", "destinationrule-subsets-not-select-pods.yaml", DR_PODS,
         ("IST0173", "DestinationRule default/subsets-not-select-pods")),
    case("DestinationRuleSubsetsWithTopologyLabels", "destinationrule-subsets-with-topology-labels.yaml", DR_PODS),
    case("DestinationRuleEmptyTopologyLabels", "destinationrule-empty-topology-labels.yaml", DR_PODS,
         ("IST0173", "DestinationRule default/empty-topology-labels")),
    case("ServiceEntry Addresses Required Lowercase Protocol", "serviceentry-address-required-lowercase.yaml", SE,
         ("IST0134", "ServiceEntry address-missing-lowercase")),
    case("ServiceEntry Addresses Required Uppercase Protocol", "serviceentry-address-required-uppercase.yaml", SE,
         ("IST0134", "ServiceEntry address-missing-uppercase")),
    case("missing Addresses and Protocol in Service Entry", "serviceentry-missing-addresses-protocol.yaml", SE,
         ("IST0134", "ServiceEntry default/service-entry-test-03"),
         ("IST0134", "ServiceEntry default/service-entry-test-04"),
         ("IST0134", "ServiceEntry default/service-entry-test-07")),
    case("missing Addresses and Protocol with DNS auto allocate", "serviceentry-missing-addresses-protocol.yaml", SE,
         mesh_config="serviceentry-missing-addresses-protocol-mesh-cfg.yaml"),
    case("ServiceEntry Addresses Allocated", "serviceentry-address-allocated.yaml", SE,
         mesh_config="serviceentry-address-allocated-mesh-cfg.yaml"),
    case("ServiceEntry conflicting protocols on same host and port", "serviceentry-conflicting-protocol.yaml",
         SE_CONFLICT, ("IST0177", "ServiceEntry default/se-http"), ("IST0177", "ServiceEntry default/se-https")),
    case("ServiceEntry no conflict same protocol", "serviceentry-no-conflict-protocol.yaml", SE_CONFLICT),
    case("ServiceEntry no conflict non-overlapping exportTo", "serviceentry-conflicting-exportto.yaml", SE_CONFLICT),
    case("EnvoyFilterUsesRelativeOperation", "relative-envoy-filter-operation.yaml", EF,
         ("IST0151", "EnvoyFilter bookinfo/test-relative-1"), ("IST0151", "EnvoyFilter bookinfo/test-relative-2"),
         ("IST0151", "EnvoyFilter bookinfo/test-relative-3"), ("IST0155", "EnvoyFilter bookinfo/test-relative-3")),
    case("EnvoyFilterFilterChainMatch", "envoy-filter-filterchain.yaml", EF),
    case("EnvoyFilterUsesAbsoluteOperation", "absolute-envoy-filter-operation.yaml", EF),
    case("EnvoyFilterUsesReplaceOperation", "envoy-filter-replace-operation.yaml", EF,
         ("IST0152", "EnvoyFilter bookinfo/test-replace-1"), ("IST0155", "EnvoyFilter bookinfo/test-replace-3"),
         ("IST0151", "EnvoyFilter bookinfo/test-replace-3")),
    case("EnvoyFilterUsesAddOperation", "envoy-filter-add-operation.yaml", EF,
         ("IST0153", "EnvoyFilter bookinfo/test-auth-2"), ("IST0153", "EnvoyFilter bookinfo/test-auth-3")),
    case("EnvoyFilterUsesRemoveOperation", "envoy-filter-remove-operation.yaml", EF,
         ("IST0151", "EnvoyFilter bookinfo/test-remove-1"), ("IST0154", "EnvoyFilter bookinfo/test-remove-2"),
         ("IST0154", "EnvoyFilter bookinfo/test-remove-3"), ("IST0151", "EnvoyFilter bookinfo/test-remove-5")),
    case("telemetrySelector", "telemetry-selector.yaml", "telemetry.SelectorAnalyzer",
         ("IST0101", "Telemetry default/maps-to-nonexistent"), ("IST0101", "Telemetry other/maps-to-different-ns"),
         ("IST0159", "Telemetry default/dupe-1"), ("IST0159", "Telemetry default/dupe-2"),
         ("IST0159", "Telemetry default/overlap-1"), ("IST0159", "Telemetry default/overlap-2")),
    case("Condition Analyzer", "condition-analyzer.yaml", "conditions.ConditionAnalyzer",
         ("IST0171", "Service default/negative-condition-svc"),
         ("IST0171", "ServiceEntry default/negative-condition-svcEntry"),
         ("IST0171", "AuthorizationPolicy default/negative-condition-authz"),
         ("IST0171", "Gateway default/negative-condition-gateway"),
         ("IST0171", "HTTPRoute default/negative-condition-httproute"),
         ("IST0171", "GRPCRoute default/negative-condition-grpcroute"),
         ("IST0171", "AuthorizationPolicy default/negative-condition-authz-partially-invalid")),
    case("KubernetesGatewaySelector", "k8sgateway-selector.yaml", "k8sgateway.SelectorAnalyzer",
         ("IST0166", "RequestAuthentication default/ra-ineffective"),
         ("IST0166", "AuthorizationPolicy default/ap-ineffective"),
         ("IST0166", "WasmPlugin default/wasmplugin-ineffective"),
         ("IST0166", "Telemetry default/telemetry-ineffective")),
    case("webook", "webhook.yaml", "webhook.Analyzer",
         ("IST0139", "MutatingWebhookConfiguration istio-sidecar-injector-missing-overlap"),
         ("IST0139", "MutatingWebhookConfiguration istio-sidecar-injector-missing-overlap"),
         ("IST0139", "MutatingWebhookConfiguration istio-sidecar-injector-overlap")),
    case("Detect `image: auto` in non-injected pods", "image-auto.yaml", "injection.ImageAutoAnalyzer",
         ("IST0146", "Deployment not-injected/non-injected-gateway-deployment"),
         ("IST0147", "Pod default/injected-pod")),
    case("virtualServiceJWTClaimRoute", "virtualservice_jwtclaimroute.yaml", "virtualservice.JWTClaimRouteAnalyzer",
         ("IST0149", "VirtualService foo")),
    case("ExternalNameServiceTypeInvalidPortName", "incorrect-port-name-external-name-service-type.yaml",
         "service.PortNameAnalyzer",
         ("IST0150", "Service nginx-ns/nginx"), ("IST0150", "Service nginx-ns2/nginx-svc2"),
         ("IST0150", "Service nginx-ns3/nginx-svc3")),
    case("ExternalNameServiceTypeValidPortName", "correct-port-name-external-name-service-type.yaml",
         "service.PortNameAnalyzer"),
    case("externalControlPlaneMissingWebhooks", "externalcontrolplane-missing-urls.yaml", ECP,
         ("IST0163", "MutatingWebhookConfiguration istio-sidecar-injector-external-istiod"),
         ("IST0163", "ValidatingWebhookConfiguration istio-validator-external-istiod")),
    case("externalControlPlaneMissingWebhooks (custom namespace)", "externalcontrolplane-missing-urls-custom-ns.yaml",
         ECP, ("IST0163", "MutatingWebhookConfiguration istio-sidecar-injector-custom-ns"),
         ("IST0163", "ValidatingWebhookConfiguration istio-validator-custom-ns")),
    case("externalControlPlaneUsingIpAddresses", "externalcontrolplane-using-ip-addr.yaml", ECP,
         ("IST0164", "MutatingWebhookConfiguration istio-sidecar-injector-external-istiod")),
    case("externalControlPlaneValidWebhooks", "externalcontrolplane-valid-urls.yaml", ECP),
    case("externalControlPlaneValidWebhooks (custom namespace)", "externalcontrolplane-valid-urls-custom-ns.yaml", ECP),
)


# testGrid cases left out, with why: none of them describes a request that fails.
OMITTED: dict[str, str] = {
    "misannoted": "annotations.K8sAnalyzer: unknown or misplaced annotations (IST0107, IST0108, IST0125, IST0135)",
    "alpha": "maturity.AlphaAnalyzer: alpha annotations (IST0136); skipAll in Istio's own grid",
    "deprecation": "deprecation.FieldAnalyzer: deprecated fields (IST0002)",
    "blockedCIDRs*": "authn.BlockedCIDRsAnalyzer: istiod may fetch JWKS from any address (IST0175), a hardening note",
    "unknown service registry in mesh networks": "multicluster.MeshNetworksAnalyzer (IST0126): needs a meshNetworks file",
    "Analyze invalid telemetry": "telemetry.ProviderAnalyzer: a Telemetry naming an unknown provider loses telemetry (IST0157)",
    "telemetryDefaultSelector": "telemetry.DefaultSelectorAnalyzer: two namespace-wide Telemetries (IST0160)",
    "Telemetry Lightstep": "telemetry.LightstepAnalyzer: a deprecated provider (IST0002)",
    "GatewayAPICRDVersionBelowMinimum": "k8sgateway.CRDVersionAnalyzer (IST0176): an outage, but it needs the "
                                        "CustomResourceDefinitions and the istiod version's minimum table",
}


@dataclass(frozen=True)
class Score:
    case: Case
    expected: Counter
    found: Counter

    @property
    def matched(self) -> int:
        return sum((self.expected & self.found).values())

    @property
    def missed(self) -> Counter:
        return self.expected - self.found

    @property
    def false(self) -> Counter:
        return self.found - self.expected


def normalize_origin(origin: str) -> str:
    """Istio prints ``Kind name`` when the YAML has no namespace; meshbot reads it into ``default``."""
    kind, _, name = origin.partition(" ")
    if "/" not in name and is_namespaced(kind):
        return f"{kind} default/{name}"
    return origin


def analyze_istio_files(*files: str, analyzers: tuple[str, ...] | None = None,
                        mesh_config: str | None = None) -> list[Finding]:
    """Findings for Istio testdata files, read the way ``meshbot analyze -f`` reads them (offline defaults)."""
    source = FileSource([DATA / f for f in files], mesh_config=DATA / mesh_config if mesh_config else None)
    ctx = CheckContext(snapshot=source.snapshot(ANALYZE_KINDS))
    return run_analyzers(ctx, only=analyzers)


def analyze_case(grid_case: Case) -> list[tuple[str, str]]:
    """(code, origin) of what meshbot's analyzers for this case report."""
    findings = analyze_istio_files(*grid_case.files, analyzers=ANALYZER_MAP[grid_case.analyzer],
                                   mesh_config=grid_case.mesh_config)
    return [(f.code, f.origin) for f in findings if f.code.startswith("IST")]


def score(grid_case: Case) -> Score:
    expected = Counter((code, normalize_origin(origin)) for code, origin in grid_case.expected)
    return Score(grid_case, expected, Counter(analyze_case(grid_case)))


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    scores = [score(c) for c in GRID]
    expected = sum(sum(s.expected.values()) for s in scores)
    matched = sum(s.matched for s in scores)
    false = sum(sum(s.false.values()) for s in scores)
    exact = sum(1 for s in scores if not s.missed and not s.false)
    for s in scores:
        if s.missed or s.false:
            print(f"{s.case.name}: expected {sum(s.expected.values())}, found {s.matched}, "
                  f"missed {sum(s.missed.values())}, false {sum(s.false.values())}")
            if verbose:
                for item in sorted(s.missed.elements()):
                    print(f"    missed {item[0]} {item[1]}")
                for item in sorted(s.false.elements()):
                    print(f"    false  {item[0]} {item[1]}")
    print(f"\ncases {len(scores)} (exact {exact}); expected {expected}; found {matched}; "
          f"missed {expected - matched}; false {false}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
