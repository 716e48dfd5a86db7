# The self-supervision challenge pipeline: pretraining -> multi-layer features -> the evaluation tracks -> tables.
# This file only wires; rules live in rules/*.smk and helpers in rules/common.smk.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/features.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all_tracks:
    default_target: True
    input:
        leaderboard_outputs(),
