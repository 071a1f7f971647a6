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

test: install
	$(PY) -m pytest

demo: install
	bash run_sample.sh

clean:
	rm -rf sample runs coco_sample*.npy*
