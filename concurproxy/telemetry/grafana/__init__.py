"""Grafana dashboards as code; ``python -m concurproxy.telemetry.grafana`` writes grafana/dashboards/."""
