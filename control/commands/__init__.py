"""Commands to devices: MQTT and Modbus transports, tracking, retries, expiry, progress."""
