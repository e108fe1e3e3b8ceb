"""Simulated devices on the MQTT wire, thousands in one process.

``device`` (``MqttDevice``: a model's readings, state and answers on time), ``link``
(its paho session on the asyncio loop, ``WireOptions``), ``encoding`` (the payloads),
``commands`` (how a command is answered), ``faults`` (what wire faults do to the link and
the readings) and ``hub`` (``MqttHub``: what every device of a process shares). Like the
rest of the simulator it knows only ``devices.wire``, as a real device's firmware would.
"""
