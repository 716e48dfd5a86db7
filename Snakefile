# The self-supervision challenge pipeline: pretraining -> multi-layer features -> the evaluation tracks -> tables.
# This file only wires; rules live in rules/*.smk and helpers in rules/common.smk.
import sys

from snakemake.utils import min_version

sys.path.insert(0, f"{workflow.basedir}/src")
from ssl_challenge.core.config import ConfigError

# torch-free; fills defaults as snakemake's validate
from ssl_challenge.plan.config_checks import validate_config
from ssl_challenge.plan.site_config import SITE_CONFIG, merge_site_config

min_version("9.0")


# config/config.yaml is the embedded default. A --configfile on the command line replaces it (each is a complete
# configuration; the schema fills the defaults), so config/smoke.yaml never inherits the default's models.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# config/site.yaml (untracked; config/site.example.yaml shows its keys): this machine's data roots, published
# low-shot folder and conda environment, merged over a configuration that runs on the real data sets (such as
# config/challenge.yaml), so that no tracked file is edited; a --config on the command line still wins.
site_keys = merge_site_config(config, SITE_CONFIG, workflow.config_settings.config)
SCHEMA = f"{workflow.basedir}/workflow/schemas/config.schema.yaml"
try:
    validate_config(config, SCHEMA)  # names the failing key
except ConfigError as error:
    if any(f"'{key}'" in str(error) for key in site_keys):
        raise ConfigError(f"{SITE_CONFIG} (merged over the configuration): {error}") from None
    raise


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
