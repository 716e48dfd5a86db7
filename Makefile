# The two entry points of the README. Everything else is Snakemake's job.
#   make all_tracks   set up (.venv, embedded data) and run every track on the embedded default
#   make test         set up and run the whole test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=
# With slurm-client installed and no controller answering, the slurm executor plugin's import runs
# `scontrol show config` with a 10 s time-out on every Snakemake start (dry runs included). An empty slurm.conf
# makes it fail at once. Cluster users run snakemake directly (or set SLURM_CONF), not through this Makefile.
export SLURM_CONF ?= /dev/null

.PHONY: all_tracks test venv data dry-run lint clean-results fullscale_check slurm-profile report seeds_study

all_tracks: venv data
	$(BIN)/snakemake --profile profiles/local all_tracks
	@cat results/tables/leaderboard.md

# One self-contained HTML file (results/report.html): the tables with each figure's provenance, the plots and
# the training curves of every model (rules/report.smk). Runs what is missing first.
report: venv data
	$(BIN)/snakemake --profile profiles/local report_items
	$(BIN)/snakemake --report results/report.html report_items

# The seeds study (rules/seeds.smk, outside all_tracks): the whole experiment once per seed of seeds_study.seeds,
# then the tables as mean +- std and results/tables/claims.md. Hours on 2 cores: run it on purpose.
seeds_study: venv data
	$(BIN)/snakemake --profile profiles/local seeds_study
	@cat results/tables/claims.md

# pytest's exit code 5 (no test collected) is a failure of the suite, not a pass.
test: venv data
	$(BIN)/pytest $(PYTEST_ARGS) ; status=$$? ; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing the suite" >&2; exit 1; fi ; \
	exit $$status

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The embedded data set is Debian's dataset-fashion-mnist (real images, no download at run time).
data:
	@if [ -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST not found in $(FASHION_MNIST_DIR) and apt-get is unavailable."; \
		echo "Put the four IDX files (train-images-idx3-ubyte.gz, ...) in a folder, set the config key"; \
		echo "data.embedded.fashion_mnist_dir in config/config.yaml to it, and run:"; \
		echo "  make all_tracks FASHION_MNIST_DIR=/that/folder"; \
		exit 1; \
	fi

dry-run: venv
	$(BIN)/snakemake -n all_tracks

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

clean-results:
	rm -rf results

# The full-scale configuration (config/challenge.yaml) on a miniature of its data sets, on the CPU: only the size
# keys of config/fullscale_check.yaml differ (tests/workflow/test_fullscale_config.py). Builds the tree once under
# results/fullscale_check/data and runs every rule of the full-scale DAG there (results/fullscale_check/results).
# `make test` runs it too (tests/e2e/test_fullscale_check.py).
FULLSCALE_CHECK_DIR := results/fullscale_check
fullscale_check: venv data
	PYTHONPATH=src $(BIN)/python -m ssl_challenge.data.miniature $(FULLSCALE_CHECK_DIR)/data \
		--fashion-mnist-dir $(FASHION_MNIST_DIR)
	$(BIN)/snakemake --profile profiles/local all_tracks --directory $(FULLSCALE_CHECK_DIR) \
		--configfile config/challenge.yaml config/fullscale_check.yaml
	@cat $(FULLSCALE_CHECK_DIR)/results/tables/leaderboard.md

# Installs the cluster profile `slurm` (profiles/slurm/config.yaml) where Snakemake looks up profiles by name, so
# that `snakemake --profile slurm all_tracks` runs the full scale from the repository root. Edit the installed
# copy (partition, account, GPU type: see profiles/README.md); an edited copy is never overwritten.
SLURM_PROFILE_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake/slurm
slurm-profile:
	@mkdir -p $(SLURM_PROFILE_DIR)
	@if [ -f $(SLURM_PROFILE_DIR)/config.yaml ]; then \
		if cmp -s profiles/slurm/config.yaml $(SLURM_PROFILE_DIR)/config.yaml; then \
			echo "$(SLURM_PROFILE_DIR)/config.yaml is already the template"; \
		else \
			echo "$(SLURM_PROFILE_DIR)/config.yaml exists and differs from profiles/slurm/config.yaml: kept as it is" \
				"(compare them with diff; remove it to install the template again)"; \
		fi; \
	else \
		cp profiles/slurm/config.yaml $(SLURM_PROFILE_DIR)/config.yaml; \
		echo "installed $(SLURM_PROFILE_DIR)/config.yaml: set your partition and account (and GPU type) there," \
			"then run from this folder: snakemake --profile slurm all_tracks"; \
	fi
