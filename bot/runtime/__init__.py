"""The process runtime every feature may use: metrics, HTTP route shapes, log redaction, wakeable loops.

The bottom of ``bot``: nothing here imports another meshbot module, so features can use it without
depending on the server that wires them.
"""
