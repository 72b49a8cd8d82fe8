"""Monitoring files for a deployment: Prometheus alert rules and their unit tests, scrape
configs, Grafana dashboards, written by ``modelport monitoring export``."""
