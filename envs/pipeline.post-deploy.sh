#!/usr/bin/env bash
# Snakemake runs this once inside the conda environment of pipeline.yaml right after creating it
# (`--software-deployment-method conda`), from the run's working directory: the checkout holding the Snakefile.
# It installs this package (editable, no dependencies: pipeline.yaml pins them), so that the rule scripts and the
# torchrun workers that pretraining starts (`python -m ssl_challenge.stages.pretraining`) import ssl_challenge.
# A pip entry in pipeline.yaml cannot do it: conda runs pip in the folder of the copy of the environment file that
# Snakemake makes under .snakemake/conda/, so a relative path such as `-e ../` would not point at the checkout.
set -euo pipefail
if ! grep -qs '^name = "ssl-challenge"' pyproject.toml; then
    echo "pipeline.post-deploy.sh: $(pwd) is not the ssl-challenge checkout (no pyproject.toml naming" \
         "ssl-challenge); run snakemake from the checkout's root so that its conda environment can install" \
         "the package" >&2
    exit 1
fi
python -m pip install --no-deps --editable "$(pwd)"
