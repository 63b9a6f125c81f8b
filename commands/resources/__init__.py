"""The names of Kubernetes things: the kinds meshbot reads (and where the API serves them), and pod references.

It sits below ``commands.clients`` and imports no other meshbot module, so the Kubernetes client and the
cluster model above it share one vocabulary without the client reaching up into ``commands.cluster``.
"""
