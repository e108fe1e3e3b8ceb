"""Control: commands with acknowledgement, lighting programs, scheduler, overrides."""
