# The two commands of the README: `make demo` and `make test`.
.PHONY: bootstrap demo test lint pytest format bench

bootstrap:
	@scripts/bootstrap

demo: bootstrap
	.venv/bin/pharos demo

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

pytest: bootstrap
	.venv/bin/pytest

test: lint pytest

# Every benchmark of bench/ (short defaults, ~15 minutes), one report: bench/report/latest.md
# and .json. Not part of `make test`.
bench: bootstrap
	.venv/bin/python bench/report.py $(BENCH_ARGS)

format: bootstrap
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
