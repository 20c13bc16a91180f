# robustlearn — `make demo` runs the main job, `make test` the test suite; both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
export WANDB_SILENT := true

.PHONY: install data demo test test-slow lint clean gpu-bundle docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first, so that no dependency pulls a CUDA build of torch.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST from Debian's package when we are root and the files are missing;
# otherwise robustlearn looks in data.root, $$ROBUSTLEARN_DATA, or downloads.
data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

# A small noisy-label sweep (CE, GCE, SCE; 40 % symmetric noise; 2 seeds) and its leaderboard.
DEMO := runs/demo
demo: install data
	$(VENV)/bin/robustlearn sweep configs/sweeps/demo.yaml --workers 2
	$(VENV)/bin/robustlearn leaderboard --results $(DEMO)/results.sqlite --where sweep=demo \
	  --format html --out $(DEMO)/leaderboard.html --plots $(DEMO)/plots >/dev/null
	$(VENV)/bin/robustlearn leaderboard --results $(DEMO)/results.sqlite --where sweep=demo
	@echo
	@echo "Leaderboard page: $(DEMO)/leaderboard.html   plots: $(DEMO)/plots/   runs: $(DEMO)/<run_id>/"

test: install data
	$(PY) -m pytest

test-slow: install data
	$(PY) -m pytest -m slow

# Every generated docs page (docs/reports.md) from its committed results bundle: tables, quoted numbers, figures.
docs: install
	$(VENV)/bin/robustlearn report --all

lint: install
	$(VENV)/bin/ruff check robustlearn tests benchmarks

# What a bare GPU machine (torch, Lightning, torchmetrics; no registry) needs to run benchmarks/gpu_suite.py:
# the pure-Python wheels it lacks and the Fashion-MNIST files, in the ignored folder .gpu/ (see docs/performance.md).
gpu-bundle: install data
	rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data/fashion-mnist
	$(PY) -m pip download -q --no-deps -d .gpu/wheels "omegaconf>=2.4"  # 2.4 needs only PyYAML
	cp $(FMNIST)/*-ubyte.gz .gpu/data/fashion-mnist/
	@du -sh .gpu

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
