"""Grafana dashboards as code, provisioning and embedding (later issues)."""
