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

test: install
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean-demo:
	rm -rf $(DEMO)
