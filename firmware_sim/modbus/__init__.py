"""Simulated Modbus TCP devices: energy meters and lighting cabinets on modbus-tk servers."""

from firmware_sim.modbus.cabinet import DEFAULT_CIRCUITS, CabinetModel, CircuitSpec
from firmware_sim.modbus.loads import BuildingLoad, BuildingType, LoadProfile, LoadShape
from firmware_sim.modbus.meter import EnergyMeterModel, MeterPhysics, building_meter
from firmware_sim.modbus.server import (
    ModbusDeviceServer,
    ModbusModel,
    ModbusServerPool,
    ModbusUnit,
)

__all__ = [
    "DEFAULT_CIRCUITS",
    "BuildingLoad",
    "BuildingType",
    "CabinetModel",
    "CircuitSpec",
    "EnergyMeterModel",
    "LoadProfile",
    "LoadShape",
    "MeterPhysics",
    "ModbusDeviceServer",
    "ModbusModel",
    "ModbusServerPool",
    "ModbusUnit",
    "building_meter",
]
