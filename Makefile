# The two commands of the README: `make demo` and `make test`. Each creates .venv from
# requirements.txt first if it is missing or older than requirements.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# One pytest worker per core (pytest-xdist); --dist loadfile keeps each test file on one
# worker, so a file's module fixtures (a shared training run) are made once; files are
# handed out in collection order, long runs first (tests/conftest.py, LONG_FILES).
test: install
	$(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder

demo: install
	bash run_sample.sh

clean:
	rm -rf sample runs coco_sample*.npy*
