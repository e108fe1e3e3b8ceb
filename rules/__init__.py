"""Rules: rule definitions, evaluation, alert lifecycle and actions (later issues)."""
