"""Simulated devices speaking only the wire contract of ``devices.wire`` (later issues)."""
