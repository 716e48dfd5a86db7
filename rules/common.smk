# Wildcard constraints, the path of every output kind, thin input and params functions. Which jobs exist is
# planning.py (unit-tested); checks across config keys are config_checks.py. Torch-free: the DAG builds in a second.
from pathlib import Path

from ssl_challenge import methods  # the method registry: torch-free declarations
from ssl_challenge.plan import planning
from ssl_challenge.core import provenance, run_files  # torch-free
from ssl_challenge.plan.config_checks import check_data_sources

RESULTS = "results"
DATASET_SPLITS = planning.dataset_splits()  # features: one job per model and data set (all its splits)
# Every params and plan below reads this copy of the validated config, whose keys are sorted: Snakemake compares
# params as written, so reordering the keys of a config file must mark nothing stale.
CONFIG = planning.canonical_config(config)


wildcard_constraints:
    model=planning.MODEL_NAME_PATTERN,
    layer="feat[1-5]",
    k="[0-9]+",


# Output patterns of models named by wildcards (planning.format_model_name writes every model name).
SNAPSHOT_MODEL = planning.format_model_name("{model}", epoch="{epoch}")
CODC_MEMBER_MODEL = planning.format_model_name("{experiment}", round="{round}", member="{member}")


# ---------------------------------------------------------------- paths: one function per output kind
def embedded_dir():
    return f"{RESULTS}/data/embedded"


def embedded_manifest():
    return f"{embedded_dir()}/manifest.json"


def model_file(model):
    return f"{RESULTS}/models/{model}/model.pth"


def training_metrics_file(model):
    return f"{RESULTS}/models/{model}/metrics.jsonl"


def snapshots_dir(model):
    return f"{RESULTS}/models/{model}/snapshots"


def pseudo_labels_file(model):
    """The pseudo-labels a configured model asks for (CLS: k-means of other models' features)."""
    return f"{RESULTS}/labels/{model}.npz"


def codc_labels_file(experiment, member, round_):
    """A CODC member's initial labels in a round (k-means of its peers' or its own previous-round features)."""
    return f"{RESULTS}/codc/{experiment}/r{round_}/{member}.labels.npz"


def features_file(model, split):
    return f"{RESULTS}/features/{model}/{split}.npz"


def layer_result_file(model, track, layer, k=None):
    """The result of one layer on an SVM track (voc07_svm, voc07_lowshot), or of one k of it on the low-shot track."""
    return f"{RESULTS}/eval/{model}/{track}/" + (f"{layer}/k{k}" if k else layer) + ".json"


def lowshot_samples_file(k):
    return f"{RESULTS}/eval/voc07_lowshot_samples/k{k}.json"


def probe_file(model, track):
    """The result of a linear-probe track (places205_linear, imagenet_linear), all layers."""
    return f"{RESULTS}/eval/{model}/{track}.json"


def probe_metrics_file(model, track):
    return f"{RESULTS}/eval/{model}/{track}.metrics.jsonl"


def test_scores_file(result):
    """What a track's result file is scored from, for the submission: test scores, predictions or detections."""
    return result.replace(".json", ".zip" if result.endswith("voc07_detection.json") else ".scores.npz")


def submission_manifest(model):
    return f"{RESULTS}/submission/{model}/manifest.json"


def runs_dir(stage, model):
    """Run folders of a resumable evaluation (one per settings digest, holding its checkpoints)."""
    return f"{RESULTS}/eval/{model}/{stage}_runs"


def table_file(name, extension):
    return f"{RESULTS}/tables/{name}{extension}"


def table_files(name, *extensions):
    return [table_file(name, extension) for extension in extensions]


def plot_file(name):
    return f"{RESULTS}/plots/{name}.png"


def log_file(*parts):
    return f"{RESULTS}/logs/{'/'.join(parts)}.log"


def benchmarks_dir():
    return f"{RESULTS}/benchmarks"


def benchmark_file(*parts):
    """A job's wall time and memory; the first folder is its stage in the leaderboard's stage-time table."""
    return f"{benchmarks_dir()}/{'/'.join(parts)}.tsv"


def track_files(model, track):
    """The result files of a model on a track: one per layer on the SVM tracks, one for a probe or detection."""
    if track in ("voc07_svm", "voc07_lowshot"):
        return [layer_result_file(model, track, layer) for layer in CONFIG["evaluation"][track]["layers"]]
    return [probe_file(model, track)]


# ---------------------------------------------------------------- data, code and numerics (params of many rules)
def roots(*datasets):
    """The roots a job reads, and only those (another data set's root must not make it stale)."""
    every_root = planning.data_roots(CONFIG, embedded_dir())
    return {dataset: every_root[dataset] for dataset in datasets}


def data_input(wildcards=None):
    """Jobs that read images depend on the embedded build; real roots were checked at DAG-build time."""
    return [embedded_manifest()] if CONFIG["data"]["source"] == "embedded" else []


def code_digest(script, methods=()):
    """A rule's ``code`` param: the digest of the code its script runs (the modules it imports included, which
    Snakemake does not track), so that editing that code marks the jobs stale (provenance.py)."""
    return provenance.script_code(Path(workflow.basedir, "workflow", "scripts", script), methods)


def training_code(model_config):
    built = methods.built_methods(model_config["method"], model_config["method_options"])
    return code_digest("pretrain.py", tuple(built))


def conda_environment():
    """The rules' conda environment (config key resources.conda_env): faiss-cpu, or faiss-gpu on GPU nodes."""
    environments = {"cpu": "../envs/pipeline.yaml", "gpu": "../envs/pipeline-gpu.yaml"}
    return environments[CONFIG["resources"]["conda_env"]]


def numerics_mode():
    """A param of the jobs that compute with torch or BLAS (deterministic and fast numerics differ in results)."""
    return "deterministic CPU numerics" if CONFIG["resources"]["deterministic"] else "fast CPU numerics"


# ---------------------------------------------------------------- training: configured models and CODC rounds
def pretrain_model_config(wildcards):
    return planning.training_config(CONFIG, wildcards.model, pseudo_labels_file)


def pretrain_code(wildcards):
    return training_code(pretrain_model_config(wildcards))


def pretrain_method_inputs(wildcards):
    return planning.training_inputs(CONFIG, wildcards.model, pseudo_labels_file)


def codc_model_config(wildcards):
    member = (wildcards.experiment, wildcards.member, int(wildcards.round))
    paths = dict(model_file=model_file, codc_labels_file=codc_labels_file, labels_file=pseudo_labels_file)
    return planning.codc_round_config(CONFIG, *member, **paths)


def codc_round_code(wildcards):
    return training_code(codc_model_config(wildcards))


def codc_round_inputs(wildcards):
    """A round needs its labels (from all peers' previous round), the member's previous-round weights and what its
    own method reads (a CLS member keeps its pseudo-labels): the files the methods declare, named by kind."""
    round_config = codc_model_config(wildcards)
    files = methods.input_files(round_config["method"], round_config["method_options"])
    return {
        entry.kind if len(entry.path) == 1 else f"{entry.method}_{entry.kind}": entry.file for entry in files
    }


# ---------------------------------------------------------------- features and evaluation
def concatenation_member_features(model, dataset):
    """A concatenation's input feature files, member by member, each member's in DATASET_SPLITS order."""
    members = planning.concatenations(CONFIG)[model]
    return [features_file(member, split) for member in members for split in DATASET_SPLITS[dataset]]


def linear_probe_input(wildcards):
    """Online, the frozen trunk (a concatenation: its members') runs over the images; cached reads features."""
    inputs = planning.linear_probe_inputs(CONFIG, wildcards.model, model_file, features_file)
    if planning.probes_online(CONFIG, wildcards.model):
        inputs["data"] = data_input()
    return inputs


def probe_features(wildcards):
    return planning.probe_feature_options(CONFIG, planning.probes_online(CONFIG, wildcards.model))


# ---------------------------------------------------------------- tables and targets
def evaluation_outputs():
    return planning.evaluation_files(CONFIG, track_files)


def all_evaluation_files(wildcards=None):
    return [path for tracks in evaluation_outputs().values() for paths in tracks.values() for path in paths]


def pretrain_benchmarks(wildcards=None):
    """The wall time of every training job (pretraining and CODC rounds), for the stage-time table."""
    return [benchmark_file("pretrain", model) for model in planning.trained_models(CONFIG)]


def leaderboard_outputs():
    tables = table_files("leaderboard", ".csv", ".md", ".tex")
    return tables + [table_file("stage_times", ".csv"), plot_file("lowshot")]


def dc_vs_odc_spec():
    paths = dict(model_file=model_file, benchmark_file=benchmark_file, track_files=track_files)
    return planning.dc_vs_odc_spec(CONFIG, **paths)


def dc_vs_odc_outputs():
    outputs = table_files("dc_vs_odc", ".csv", ".md") + [plot_file("dc_vs_odc")]
    return outputs if planning.has_dc_vs_odc(CONFIG) else []


def ablation_entries():
    return planning.ablation_entries(CONFIG, track_files)


def ablation_outputs():
    outputs = table_files("codc_ablation", ".csv", ".md", ".tex")
    return outputs if CONFIG["ablation"]["experiments"] else []


def submission_outputs():
    return [submission_manifest(model) for model in planning.leaderboard_models(CONFIG)]


def submission_inputs(wildcards):
    spec = planning.submission_spec(CONFIG, wildcards.model, track_files, test_scores_file)
    return [path for track in spec.values() for pair in track.items() for path in pair] + data_input()


check_data_sources(CONFIG, embedded_built=Path(embedded_manifest()).exists())  # before any job runs
