# Two commands do all set-up on a fresh machine (each installs what it needs into .venv):
#   make digits      train MPL on real handwritten digits (offline, 10-20 minutes on one thread), results in runs/digits
#   make test        run the default test suite (slow tests excluded)
# make two_moons: the paper's TwoMoon experiment (a few minutes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/activate:
	$(PY) -m venv $(VENV)

# pip through tools/quiet_pip.py: without its notices that a configured local index lacks a project's page
# (`Location 'file://...' is ignored`); errors and the exit status pass through.
$(VENV)/.installed: requirements.txt $(BIN)/activate
	$(BIN)/python tools/quiet_pip.py install -q --upgrade pip
	$(BIN)/python tools/quiet_pip.py install -q -r requirements.txt
	touch $@

.PHONY: install test test-slow two_moons digits
install: $(VENV)/.installed

# Two workers, one test file each at a time (a file's module fixtures run once): the suite is mostly
# subprocesses and single-threaded TensorFlow, so serially it kept about one of the two cores busy.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow tests

two_moons: install
	$(BIN)/python -m mpl_tf.train --gin_file=gin/two_moons.gin --workdir=runs/two_moons

# One intra-op thread, as the current-code figures (studies/digits_results/digits_results.md, studies/) were measured: the thread
# count changes TensorFlow's float summation order, so another count trains a different (equally reproducible) run.
digits: install
	TF_NUM_INTRAOP_THREADS=1 $(BIN)/python -m mpl_tf.train --gin_file=gin/digits.gin --workdir=runs/digits
