"""Telemetry: names, the Recorder, and the optional setup of providers and exporters."""
