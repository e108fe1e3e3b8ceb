"""Grafana for the IOC: boards as code (``boards``), their JSON (``build``), provisioning
files, push into a running Grafana (``push``), embed links (``embed``) and the checks the
tests run on every query (``verify``). Never imports ``pharos``."""
