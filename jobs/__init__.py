"""Conveyor's core, shared by producers and workers: settings, kinds, broker, store, middleware."""
