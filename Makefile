# Two commands do all set-up on a fresh machine (each installs what it needs into .venv):
#   make two_moons   train MPL on the paper's TwoMoon experiment (offline), results in runs/two_moons
#   make test        run the default test suite (slow tests excluded)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: requirements.txt $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

.PHONY: install test test-slow two_moons digits
install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow tests

two_moons: install
	$(BIN)/python -m mpl_tf.train --gin_file=gin/two_moons.gin --workdir=runs/two_moons
