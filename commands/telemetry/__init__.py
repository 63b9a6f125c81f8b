"""When it started, who is failing whom, and what changed just before.

Prometheus (Istio's standard metrics and istiod's own), Kubernetes Events and a change timeline read
from the cluster; ``relate`` puts them next to triage's causes.  See docs/timeline.md.
"""
