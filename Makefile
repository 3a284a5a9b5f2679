# Two commands do all the set-up: `make run` (the app on the bundled zoo) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
# Ray is optional (sweeps on a Ray cluster): `make test` installs it, `make run` does not.
RAY_STAMP := $(VENV)/.ray-installed
# Published similarity implementations, for the tests only: `make test` installs them, `make run` does not.
REFERENCE_STAMP := $(VENV)/.reference-installed

.PHONY: setup run test test-fast lint bench clean-venv

setup: $(STAMP)
	@scripts/system-packages.sh

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

$(RAY_STAMP): requirements-ray.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-ray.txt
	@touch $(RAY_STAMP)

$(REFERENCE_STAMP): requirements-reference.txt $(STAMP)
	@# Optional for the suite: a package that cannot build here (repsim compiles C++) only skips its comparison.
	$(PY) -m pip install --quiet -r requirements-reference.txt || \
		echo "warning: the reference implementations did not install; their comparisons are skipped"
	@touch $(REFERENCE_STAMP)

# The app on http://localhost:8501 (localhost only: see README, "Serving a class").
run: setup
	$(PY) -m streamlit run app.py

# Every test, the browser test included.
test: setup $(RAY_STAMP) $(REFERENCE_STAMP)
	$(PY) -m pytest

# Everything but the browser test and the slow marks.
test-fast: setup $(RAY_STAMP) $(REFERENCE_STAMP)
	$(PY) -m pytest -m "not e2e and not slow"

# Every benchmark this device can run (GPU: the performance targets), appended to bench/results/.
bench: setup
	$(PY) -m bench.all

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
