"""Telemetry at the edges: execution traces (Perfetto / Chrome JSON), Prometheus
metrics and plots of run reports."""
