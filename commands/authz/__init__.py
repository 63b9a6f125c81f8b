"""AuthorizationPolicy reasoning: which policies apply to a workload and what they do to a caller.

Pure: it reads a Snapshot and returns typed answers, following istiod's own code
(istio/istio ``pilot/pkg/model/authorization.go`` for selection, ``pilot/pkg/security/authz/``
for how rules become Envoy RBAC).  ``policy`` parses the resource, ``evaluate`` decides a
request, ``explain`` says why a workload answers ``403 RBAC: access denied``.
"""
