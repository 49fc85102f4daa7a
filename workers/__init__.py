"""The worker runtime: ``conveyor worker`` processes that run jobs from RabbitMQ."""
