"""What operators watch: Prometheus metrics, alert webhooks, CSV export."""
