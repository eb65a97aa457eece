# The two commands of the README: `make demo` runs the main job, `make test` the test suite.
# Each one sets up .venv itself on a fresh machine (Debian, Python 3.11).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DS_BUILD_OPS := 0

.PHONY: install test demo clean

install: $(STAMP)

# torch goes in first and alone: anything that asks for torch before it is installed
# would pull the multi-GB CUDA build. Everything after goes through constraints.txt.
$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e ".[cluster,test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash examples/demo/run_demo.sh

clean:
	rm -rf $(VENV) *.egg-info
