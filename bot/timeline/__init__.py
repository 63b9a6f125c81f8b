"""The timeline in Slack: read for an incident (onset, failing edges, changes, Warning Events), shown in its top
message and thread with the error-ratio graph, and answered to ``/mesh timeline``.  The reading itself is
``commands.telemetry``'s; see docs/timeline.md."""
