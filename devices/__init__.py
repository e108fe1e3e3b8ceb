"""Devices: kinds, the wire contract, the registry, commissioning and broker credentials."""
