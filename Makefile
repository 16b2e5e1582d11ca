# Two entry points for a fresh machine with Python 3.11:
#   make demo   set up .venv, then run the main job on the embedded default mock
#   make test   set up .venv, then run the whole test suite (offline)
#   make docs   set up .venv, then build the documentation into docs/_build/html (warnings are
#               errors) and run the examples in its pages
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e ".[test,docs]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streammix demo --out demo_output --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -n 2

docs: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	OMP_NUM_THREADS=1 $(BIN)/sphinx-build -W --keep-going -q -b doctest docs docs/_build/doctest
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) demo_output .pytest_cache docs/_build docs/generated
