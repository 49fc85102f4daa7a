"""The `conveyor` command's parts: shared options and state, views, command groups."""
