"""Email: addresses, templates, MIME messages, SMTP delivery and the record of deliveries."""
