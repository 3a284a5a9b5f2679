# Two commands do all the set-up: `make run` (the app on the bundled zoo) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: setup run test test-fast lint bench clean-venv

setup: $(STAMP)
	@scripts/system-packages.sh

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# The app on http://localhost:8501 (localhost only: see README, "Serving a class").
run: setup
	$(PY) -m streamlit run app.py

# Every test, the browser test included.
test: setup
	$(PY) -m pytest

# Everything but the browser test and the slow marks.
test-fast: setup
	$(PY) -m pytest -m "not e2e and not slow"

# Every benchmark this device can run (GPU: the performance targets), appended to bench/results/.
bench: setup
	$(PY) -m bench.all

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
