# The self-supervision challenge pipeline: pretraining -> multi-layer features -> the evaluation tracks -> tables.
# This file only wires; rules live in rules/*.smk and helpers in rules/common.smk.
import sys

from snakemake.utils import min_version

sys.path.insert(0, f"{workflow.basedir}/src")
# torch-free; fills defaults as snakemake's validate
from ssl_challenge.plan.config_checks import validate_config

min_version("9.0")


# config/config.yaml is the embedded default. A --configfile on the command line replaces it (each is a complete
# configuration; the schema fills the defaults), so config/smoke.yaml never inherits the default's models.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")  # names the failing key


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/codc.smk"
include: "rules/features.smk"
include: "rules/evaluate.smk"
include: "rules/detection.smk"
include: "rules/tables.smk"
include: "rules/report_common.smk"
include: "rules/report.smk"
include: "rules/seeds.smk"


# Seconds of work each: on a cluster they run where Snakemake runs instead of waiting in the queue.
localrules:
    all_tracks,
    lowshot_samples,
    merge_lowshot,
    snapshot_model,
    leaderboard,
    dc_vs_odc,
    ablation_tables,
    submission,
    submission_files,
    report_items,
    training_curves,
    leaderboard_page,
    codc_ablation_page,
    dc_vs_odc_page,
    seed_config,
    seeds_study,


rule all_tracks:
    default_target: True
    input:
        leaderboard_outputs(),
        dc_vs_odc_outputs(),
        ablation_outputs(),
        submission_outputs(),
