# Two entry points a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The main job: train and evaluate the default experiment on the built-in data set.
run: $(STAMP)
	$(BIN)/alrp-lab run $(ARGS)

# The whole test suite, end-to-end runs included (add PYTEST_ARGS="-m 'not slow'" to skip them).
test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check alrp_lab tests bench tools
	$(BIN)/ruff format --check alrp_lab tests bench tools

clean:
	rm -rf $(VENV) outputs multirun
