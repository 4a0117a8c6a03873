"""One loopback HTTP server: Prometheus /metrics, /healthz, /readyz and the dashboard."""
