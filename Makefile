# Two commands for a new user: `make run` (install, build the default bundle if missing, serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUNDLE ?= bundles/default
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run bundle test lint bench soak clean

# torch==2.13.0 first, explicitly: it is the CPU build on this kind of machine, and once installed the train
# extra's range is satisfied, so pip never reaches for a newer (multi-GB CUDA) torch.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[train,serve,dev]"
	$(PY) -m pip install --quiet --no-deps "openrlhf==0.11.2"  # its request code only; its deps are GPU stacks
	touch $@

install: $(VENV)/.installed

$(BUNDLE)/reward_model.json: | $(VENV)/.installed
	$(PY) -m training.fit --out $(BUNDLE) --epochs 3  # the embedded set is small: a few passes

bundle: $(BUNDLE)/reward_model.json

run: bundle
	$(PY) -m service --model-dir $(BUNDLE) --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy models training service bench collect

# Full benchmark (not in CI; minutes): docs/bench.{json,md,png}. Needs a bundle; see docs/benchmarks.md.
bench: install
	$(PY) -m bench --bundle $(BUNDLE) --out docs/bench

soak: install
	$(PY) -m bench.soak --bundle $(BUNDLE) --seconds 120 --clients 128 --json docs/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
