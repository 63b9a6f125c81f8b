"""What is wrong with the mesh and how to change it: no Slack, no SQLite, no scheduler."""
