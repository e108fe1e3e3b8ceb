"""Telemetry: MQTT ingest, Modbus poller, validation, spool, stores and queries (later issues)."""
