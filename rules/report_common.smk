# Paths and input functions of the report (rules/report.smk) and of the seeds study (rules/seeds.smk): the two
# targets outside all_tracks. Torch-free, no rules.


# ---------------------------------------------------------------- report
def training_curve_models():
    """Every model a training job wrote metrics for: the configured models and each CODC member's rounds."""
    return planning.trained_models(CONFIG)


def training_curve_file(model):
    return f"{RESULTS}/report/training_curves/{model}.png"


def table_page(name):
    return f"{RESULTS}/report/tables/{name}.html"


def report_items_inputs(wildcards=None):
    """Everything the report shows (the all_tracks outputs, their pages, the training curves)."""
    pages = [table_page("leaderboard")]
    if ablation_outputs():
        pages.append(table_page("codc_ablation"))
    if dc_vs_odc_outputs():
        pages.append(table_page("dc_vs_odc"))
    curves = [training_curve_file(model) for model in training_curve_models()]
    return leaderboard_outputs() + dc_vs_odc_outputs() + ablation_outputs() + pages + curves


# ---------------------------------------------------------------- seeds study
def study_seeds():
    return [int(seed) for seed in CONFIG["seeds_study"]["seeds"]]


def seed_dir(seed):
    return f"{RESULTS}/seeds/seed{seed}"


def seed_tables(seed):
    """The tables of one seed's run that the study reads (ablation and DC vs ODC when the config has them)."""
    tables = {"leaderboard": f"{seed_dir(seed)}/{RESULTS}/tables/leaderboard.csv"}
    if ablation_outputs():
        tables["ablation"] = f"{seed_dir(seed)}/{RESULTS}/tables/codc_ablation.csv"
    if dc_vs_odc_outputs():
        tables["dc_vs_odc"] = f"{seed_dir(seed)}/{RESULTS}/tables/dc_vs_odc.csv"
    return tables


def seeds_study_inputs(wildcards=None):
    return {
        kind: [seed_tables(seed)[kind] for seed in study_seeds()] for kind in seed_tables(study_seeds()[0])
    }
