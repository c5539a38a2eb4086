# The two commands of the README: `make demo` (the system end to end on the local cloud)
# and `make test` (the whole suite). Both install what is missing first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo stack test test-unit lint bench system-packages clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

system-packages:
	@deploy/local/system-packages.sh

# The whole suite, then the end-to-end tests once more in reverse file order: they share
# one local cloud, so a test that leans on what an earlier file left behind fails here.
test: system-packages $(VENV)/.installed
	$(PY) -m pytest
	$(PY) -m pytest -q -p no:cacheprovider $$(ls tests/e2e/test_*.py | sort -r)

test-unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy shared deploy localcloud tests bench
	for f in functions/*/main.py; do $(PY) -m mypy "$$f" || exit 1; done

demo: system-packages $(VENV)/.installed
	$(PY) -m localcloud demo

stack: system-packages $(VENV)/.installed
	$(PY) -m localcloud up

bench: system-packages $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
