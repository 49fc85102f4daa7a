"""Conveyor's Dramatiq middleware, one concern per module."""

from jobs.middleware.lifecycle import Lifecycle

__all__ = ["Lifecycle"]
