"""Control: commands with acknowledgement, lighting programs, calendars, overrides, energy."""
