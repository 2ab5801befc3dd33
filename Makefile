# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv when it is missing; installs are pinned by constraints.txt.
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := out/demo

.PHONY: install demo test lint clean-demo

$(BIN)/.lutnas-installed: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.lutnas-installed

demo: install
	bash scripts/demo.sh

# Two processes, a test file each at a time (module fixtures such as sshd stay in one process);
# the suite is held to pass with both cores busy (issue 19). The 15 slowest tests are listed at
# the end: CI's 25-minute budget is kept by looking there first.
test: install
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

lint: install
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO)
