"""Insights (cold path): the service (`service`), overview maths, anomaly
detection and model recommendations."""
