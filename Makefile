# Every target, with one line each: `make` or `make help`. The README's two commands are `make all_tracks` (set up
# and run every track on the embedded default) and `make test` (set up and run the whole test suite, as CI does).
# A line `target: prerequisites ## text` is listed by `make help`; names use underscores (the old names with a
# hyphen stay as aliases).
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

.DEFAULT_GOAL := help
.PHONY: help all_tracks test venv data dry_run dry-run lint clean_results clean-results fullscale_check \
	slurm_profile slurm-profile report seeds_study evaluate preflight

help: ## list the targets (this text; the default target)
	@echo "Targets (make <target>; the README has the details):"
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z_-]+:[^#]*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

all_tracks: venv data ## set up (.venv, embedded data), run every track on the embedded default, print the leaderboard
	$(BIN)/snakemake --profile profiles/local all_tracks
	@cat results/tables/leaderboard.md

# One self-contained HTML file (results/report.html): the tables with each figure's provenance, the plots and
# the training curves of every model (rules/report.smk). Runs what is missing first.
report: venv data ## results/report.html: the tables with their provenance, the plots, the training curves
	$(BIN)/snakemake --profile profiles/local report_items
	$(BIN)/snakemake --report results/report.html report_items

# The seeds study (rules/seeds.smk, outside all_tracks): the whole experiment once per seed of seeds_study.seeds,
# then the tables as mean +- std and results/tables/claims.md. Hours on 2 cores: run it on purpose.
seeds_study: venv data ## the whole experiment once per seed, tables as mean +- std (hours on 2 cores)
	$(BIN)/snakemake --profile profiles/local seeds_study
	@cat results/tables/claims.md

# pytest's exit code 5 (no test collected) is a failure of the suite, not a pass. -rs lists each skipped test with
# its reason; --durations=25 the slowest tests.
test: venv data ## set up and run the whole test suite (what CI runs), listing skips and the slowest tests
	$(BIN)/pytest -rs --durations=25 $(PYTEST_ARGS) ; status=$$? ; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing the suite" >&2; exit 1; fi ; \
	exit $$status

venv: $(VENV)/.installed ## create .venv and install the pinned requirements and this package

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The embedded data set is Debian's dataset-fashion-mnist (real images, no download at run time).
data: ## install the embedded data set (Debian's dataset-fashion-mnist) unless present
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

# One line per rule with its job count, then why the jobs run (`snakemake -n all_tracks` prints every job).
dry_run: venv ## what all_tracks would run: jobs per rule and why (a dry run)
	$(BIN)/snakemake all_tracks -n --quiet rules

dry-run: dry_run ## the old name of dry_run

lint: venv ## snakemake --lint and snakefmt --check of the workflow
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile rules

clean_results: ## delete results/ (every output, model and log)
	rm -rf results

clean-results: clean_results ## the old name of clean_results

# One checkpoint trained elsewhere through the tracks (tools/evaluate.py): only that model runs, in
# results/evaluate/<NAME>/ (config.yaml, results, leaderboard.md), on the embedded data, or on the real data sets
# when config/site.yaml exists. NAME defaults to the file name; TRACKS (e.g. TRACKS="voc07_svm voc07_lowshot") to
# every track the base configuration runs; BACKBONE to resnet50; BASE to config/config.yaml (config/challenge.yaml
# with a site file). The overlay it puts on the base is config/examples/evaluate.yaml.
evaluate: venv data ## evaluate one checkpoint: make evaluate WEIGHTS=model.pth LAYOUT=mmselfsup [NAME=...] [TRACKS=...]
	@if [ -z "$(WEIGHTS)" ] || [ -z "$(LAYOUT)" ]; then \
		echo "usage: make evaluate WEIGHTS=path/to/model.pth LAYOUT=torchvision|openselfsup|mmselfsup|vissl" \
			"[NAME=my_model] [TRACKS=\"voc07_svm voc07_lowshot places205_linear\"]" >&2; exit 2; fi
	$(BIN)/python tools/evaluate.py --weights "$(WEIGHTS)" --layout "$(LAYOUT)" $(if $(NAME),--name "$(NAME)") \
		$(if $(TRACKS),--tracks "$(TRACKS)") $(if $(BACKBONE),--backbone "$(BACKBONE)") $(if $(BASE),--base "$(BASE)")

# The full-scale configuration (config/challenge.yaml) on a miniature of its data sets, on the CPU: only the size
# keys of config/fullscale_check.yaml differ (tests/workflow/test_fullscale_config.py). Builds the tree once under
# results/fullscale_check/data and runs every rule of the full-scale DAG there (results/fullscale_check/results).
# `make test` runs it too (tests/e2e/test_fullscale_check.py).
FULLSCALE_CHECK_DIR := results/fullscale_check
fullscale_check: venv data ## the full-scale configuration on a miniature of its data sets, on the CPU
	PYTHONPATH=src $(BIN)/python -m ssl_challenge.data.miniature $(FULLSCALE_CHECK_DIR)/data \
		--fashion-mnist-dir $(FASHION_MNIST_DIR)
	$(BIN)/snakemake --profile profiles/local all_tracks --directory $(FULLSCALE_CHECK_DIR) \
		--configfile config/challenge.yaml config/fullscale_check.yaml
	@cat $(FULLSCALE_CHECK_DIR)/results/tables/leaderboard.md

# Before spending GPU-hours, on one GPU node (tools/preflight.py): benchmarks/gpu_check.py at the configured
# precision, then the full-scale miniature (as fullscale_check) on CUDA with DDP over every visible GPU and faiss on
# the GPU, in results/preflight/; prints the training-step throughput against a pure forward/backward and the full
# run's training GPU-hours extrapolated from it. Without a GPU it says so and stops before installing or running
# anything.
preflight: ## on a GPU node: GPU check, full-scale miniature on CUDA (DDP), GPU-hours extrapolated
	@if ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then \
		echo "make preflight: no NVIDIA GPU here (nvidia-smi lists none); run it on a GPU node. Nothing was run." >&2; \
		exit 1; \
	fi
	@$(MAKE) -s venv data
	$(BIN)/python tools/preflight.py --fashion-mnist-dir $(FASHION_MNIST_DIR)

# Installs the cluster profile `slurm` (profiles/slurm/config.yaml) where Snakemake looks up profiles by name, so
# that `snakemake --profile slurm all_tracks` runs the full scale from the repository root. Edit the installed
# copy (partition, account, GPU type: see profiles/README.md); an edited copy is never overwritten.
SLURM_PROFILE_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake/slurm
slurm_profile: ## install the cluster profile `slurm` (profiles/slurm) where Snakemake finds it by name
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

slurm-profile: slurm_profile ## the old name of slurm_profile
