"""Rules: rule files, evaluation on the live stream, the alert lifecycle and actions.

- ``spec``: the YAML rule format and its validation (errors name file, line, field);
- ``aqi``: VN_AQI (Decision 1459/QĐ-TCMT), pure; ``derived``: AQI, flood level, lamp checks;
- ``conditions`` / ``engine``: compiled conditions and the pure ``RuleEngine``;
- ``alerts`` / ``models``: the alert store (open → acknowledged → cleared → closed);
- ``actions`` / ``control_port``: commands, publishing, webhooks, maintenance;
- ``service``: ``RulesService``, ingest's observer, owning its tasks;
- ``backtest``: a rule set over stored history; ``catalog``: device facts from the registry.
"""
