"""The systems `bench/compare.py` runs side by side: one module each, sharing :mod:`bench.systems.base`.

Worker processes import their system's module too, so nothing here imports more than it must:
a Celery worker never loads Dramatiq or pika, a pika consumer never loads Celery.
"""
