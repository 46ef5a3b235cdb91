# The two commands of the README: `make up` and `make test`.
.PHONY: setup up test lint

setup:
	bash tools/setup.sh

up: setup
	.venv/bin/python -m deploy.localcloud up $(ARGS)

test: setup
	bash tools/run-tests.sh

lint:
	.venv/bin/ruff check .
