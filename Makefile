# The README's quick start: `make run` (install + main job) and `make test` (install + tests).
.PHONY: install install-dev run test lint bench

install:
	scripts/install.sh

install-dev:
	scripts/install.sh dev

run: install
	.venv/bin/lodotune tune rosenbrock lodo --schedule paper --baseline adam --seeds 8 --out runs/quickstart-$$(date +%Y%m%d-%H%M%S)

test: install-dev
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint: install-dev
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

bench: install
	.venv/bin/python bench/lodo_step.py
