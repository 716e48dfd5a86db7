# Input functions, wildcard constraints and helpers of the workflow. No rules here.
# Nothing in this file imports torch: the DAG must build in well under a second or two.
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from ssl_challenge import provenance  # noqa: E402  (torch-free)
from ssl_challenge.data import layouts  # noqa: E402  (torch-free)

RESULTS = "results"


def canonical(value):
    """``value`` with every mapping's keys sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


# Rules get parts of the config as params, and Snakemake compares params as written: sort the keys, so that
# reordering keys in a config file marks nothing stale. Named entries (models, CODC experiments,
# concatenations) keep the file's order: it is the leaderboard's row order.
for section in list(config):
    if section in ("models", "codc", "concatenations"):
        config[section] = {name: canonical(entry) for name, entry in config[section].items()}
    else:
        config[section] = canonical(config[section])
FEATURE_SPLITS = ["voc07_trainval", "voc07_test", "places205_train", "places205_val"]
TRACKS = ["voc07_svm", "voc07_lowshot", "places205_linear"]


# Model names: a configured model (rot), an intermediate backbone (dc@e4), a CODC member after a round
# (codc2@r1.dc) or a concatenation (codc2@r1.concat, or a name of config["concatenations"]).
wildcard_constraints:
    model="[a-z][a-z0-9_]*(@[a-z0-9_.]+)?",
    split="|".join(FEATURE_SPLITS),
    layer="feat[1-5]",


# ---------------------------------------------------------------- configuration checks (before any job runs)
FASHION_MNIST_FILES = [
    f"{split}-{kind}-ubyte.gz" for split in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
]


def check_fashion_mnist_dir(folder):
    missing = [name for name in FASHION_MNIST_FILES if not Path(folder, name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"config key 'data.embedded.fashion_mnist_dir' = {folder!r} lacks {missing}: install Debian's "
            "dataset-fashion-mnist (`make data`), or point the key at a folder with the four IDX files"
        )


CODC_BASE_METHODS = ("rot", "dc", "odc", "cls")


def check_codc_config():
    """CODC experiments, concatenations and the ablation table must name things that exist."""
    experiments = config["codc"]
    for name, experiment in experiments.items():
        for member in experiment["members"]:
            if member not in config["models"]:
                raise ValueError(f"config key 'codc.{name}.members': {member!r} is not a configured model")
            if config["models"][member]["method"] not in CODC_BASE_METHODS:
                raise ValueError(
                    f"config key 'codc.{name}.members': {member!r} has method "
                    f"{config['models'][member]['method']!r}; a CODC member needs a pretext loss, one of "
                    f"{list(CODC_BASE_METHODS)}"
                )
        start = experiment["start_from"]
        if start and (start not in experiments or start == name):
            raise ValueError(f"config key 'codc.{name}.start_from': {start!r} is not another CODC experiment")
    for name, members in config["concatenations"].items():
        unknown = [m for m in members if m not in pretrained_models() + codc_round_models()]
        if unknown:
            raise ValueError(f"config key 'concatenations.{name}': {unknown} are not models")
    for name in config["ablation"]["experiments"]:
        if name not in experiments:
            raise ValueError(f"config key 'ablation.experiments': {name!r} is not a CODC experiment")
    for name, control in config["ablation"]["controls"].items():
        if name not in config["ablation"]["experiments"]:
            raise ValueError(
                f"config key 'ablation.controls.{name}': {name!r} is not in ablation.experiments"
            )
        if control not in experiments or experiments[control]["label_source"] != "self":
            raise ValueError(
                f"config key 'ablation.controls.{name}': {control!r} must be a CODC experiment with "
                "label_source: self"
            )


def check_config():
    """Fail at DAG-build time, naming the config key, for what the schema cannot see."""
    if not config["models"]:
        raise ValueError("config key 'models' is empty: name at least one model to pretrain and evaluate")
    check_codc_config()
    data = config["data"]
    if config["evaluation"]["imagenet_linear"]["enabled"] and data["source"] == "embedded":
        raise ValueError(
            "config key 'evaluation.imagenet_linear.enabled' is true, but the embedded data set has no ImageNet "
            "val/ split: set data.source to real with an imagenet_root holding train/<wnid>/ and val/<wnid>/"
        )
    if data["source"] == "embedded":
        if not Path(RESULTS, "data", "embedded", "manifest.json").exists():
            check_fashion_mnist_dir(data["embedded"]["fashion_mnist_dir"])
        return
    for key in ("imagenet_root", "voc07_root", "places205_root"):
        if not data[key]:
            raise ValueError(f"config key 'data.{key}' is empty but data.source is 'real'")
    layouts.check_imagenet_root(data["imagenet_root"])
    layouts.check_voc07_root(data["voc07_root"], data["voc07_classes"] or None)
    layouts.check_places205_root(data["places205_root"])
    if config["evaluation"]["imagenet_linear"]["enabled"]:
        layouts.check_imagenet_root(data["imagenet_root"], "val")


# ---------------------------------------------------------------- data
def embedded_manifest():
    return f"{RESULTS}/data/embedded/manifest.json"


def data_roots():
    """Roots in the real on-disk layouts: built from Fashion-MNIST, or the user's data sets."""
    data = config["data"]
    if data["source"] == "embedded":
        base = f"{RESULTS}/data/embedded"
        return {
            "imagenet": f"{base}/imagenet",
            "voc07": f"{base}/VOCdevkit",
            "places205": f"{base}/places205",
        }
    return {
        "imagenet": data["imagenet_root"],
        "voc07": data["voc07_root"],
        "places205": data["places205_root"],
    }


def data_input(wildcards=None):
    """Jobs that read images depend on the embedded build; real roots were checked at DAG-build time."""
    return [embedded_manifest()] if config["data"]["source"] == "embedded" else []


def voc07_classes():
    return list(config["data"]["voc07_classes"])


# ---------------------------------------------------------------- code digests (stale stages follow the code)
CODE_DIGESTS = {}  # (script, methods) -> its code param: each computed once per DAG build


def code_digest(script, methods=()):
    """The digest of the code a script runs, given to its rule as the ``code`` param, so that editing that code
    marks the jobs stale. Snakemake tracks each script but not the modules it imports; the digest covers the
    script, its import closure inside ssl_challenge and the method modules that training loads by name
    (provenance.py)."""
    if (script, methods) not in CODE_DIGESTS:
        entries = [Path(workflow.basedir) / "workflow" / "scripts" / script]
        CODE_DIGESTS[script, methods] = provenance.describe(entries + provenance.method_files(methods))
    return CODE_DIGESTS[script, methods]


def numerics_mode():
    """A param of the jobs that compute with torch or BLAS (deterministic and fast numerics differ in results)."""
    return "deterministic CPU numerics" if config["resources"]["deterministic"] else "fast CPU numerics"


def training_code(model_config):
    return code_digest("pretrain.py", tuple(provenance.training_methods(model_config)))


def pretrain_code(wildcards):
    return training_code(pretrain_model_config(wildcards))


def codc_round_code(wildcards):
    return training_code(codc_model_config(wildcards))


# ---------------------------------------------------------------- targets
def names_regex(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def pretrained_models():
    return list(config["models"])


def model_names():
    """The leaderboard rows: configured models, CODC members after their last round, concatenations."""
    return pretrained_models() + codc_final_models() + concatenation_names()


def model_file(name):
    return f"{RESULTS}/models/{name}/model.pth"


# ---------------------------------------------------------------- CLS, CODC and concatenations
def cls_labels_file(model):
    """The pseudo-labels a CLS model is trained on (k-means of its label_models' features)."""
    return f"{RESULTS}/labels/{model}.npz"


def method_options(model):
    """A model's method_options as its training job sees them: CLS gets the path of its pseudo-labels."""
    options = dict(config["models"][model].get("method_options", {}))
    if config["models"][model]["method"] == "cls":
        options["labels_path"] = cls_labels_file(model)
    return options


def pretrain_model_config(wildcards):
    return {**config["models"][wildcards.model], "method_options": method_options(wildcards.model)}


def pretrain_extra_inputs(wildcards):
    if config["models"][wildcards.model]["method"] == "cls":
        return [cls_labels_file(wildcards.model)]
    if config["models"][wildcards.model]["method"] == "external":  # a new checkpoint makes the model stale
        weights = config["models"][wildcards.model].get("method_options", {}).get("weights")
        if not weights:
            raise ValueError(
                f"config key 'models.{wildcards.model}.method_options.weights': missing; an external "
                "model needs the path of its checkpoint"
            )
        return [weights]
    return []


def cls_label_models(wildcards):
    return list(config["models"][wildcards.model].get("method_options", {}).get("label_models", []))


def cls_label_options(wildcards):
    """k, PCA dims and seed of a CLS model's pseudo-labels (its method_options and its seed)."""
    model = config["models"][wildcards.model]
    options = model.get("method_options", {})
    where = f"models.{wildcards.model}.method_options"
    if "num_clusters" not in options or not options.get("label_models"):
        raise ValueError(f"config key '{where}': a cls model needs num_clusters and label_models")
    trained = pretrained_models() + codc_round_models()
    unknown = [name for name in options["label_models"] if name not in trained]
    if unknown:
        raise ValueError(
            f"config key '{where}.label_models': {unknown} are neither configured models nor CODC "
            f"members after a round (one of {trained})"
        )
    return {
        "num_clusters": options["num_clusters"],
        "pca_dims": options.get("pca_dims", 256),
        "seed": model.get("seed", 0),
    }


def codc_label_options(wildcards):
    experiment = config["codc"][wildcards.experiment]
    return {
        "num_clusters": experiment["num_clusters"],
        "pca_dims": experiment["pca_dims"],
        "seed": experiment["seed"] + int(wildcards.round),
    }


def codc_member_model(experiment, member, round_):
    """The model name of a CODC member after ``round_``; round 0 is where the member starts from."""
    if round_ > 0:
        return f"{experiment}@r{round_}.{member}"
    start = config["codc"][experiment]["start_from"]
    if start and member in config["codc"][start]["members"]:
        return codc_member_model(start, member, config["codc"][start]["rounds"])
    return member


def codc_final_models():
    return [
        codc_member_model(name, member, experiment["rounds"])
        for name, experiment in config["codc"].items()
        for member in experiment["members"]
    ]


def codc_labels_file(experiment, member, round_):
    return f"{RESULTS}/codc/{experiment}/r{round_}/{member}.labels.npz"


def codc_label_models(wildcards):
    """The models whose features give a member's initial labels in a round: its peers' (or its own) previous
    round."""
    experiment, round_ = config["codc"][wildcards.experiment], int(wildcards.round)
    if experiment["label_source"] == "self":
        sources = [wildcards.member]
    else:
        sources = [peer for peer in experiment["members"] if peer != wildcards.member]
    return [codc_member_model(wildcards.experiment, source, round_ - 1) for source in sources]


def codc_model_config(wildcards):
    """The training config of one member in one round: its own method as the base of the codc method."""
    experiment, member = config["codc"][wildcards.experiment], wildcards.member
    round_ = int(wildcards.round)
    base = config["models"][member]
    keys = ("epochs", "batch_size", "optimizer", "schedule", "seed", "checkpoint_every")
    return {
        "method": "codc",
        "backbone": base["backbone"],
        "augmentation": base.get("augmentation", {}),  # each member keeps its own image pipeline
        **{key: experiment[key] for key in keys if key in experiment},
        "method_options": {
            **experiment["online_options"],
            "base_method": base["method"],
            "base_options": method_options(member),
            "labels_path": codc_labels_file(wildcards.experiment, member, round_),
            "initial_weights": model_file(codc_member_model(wildcards.experiment, member, round_ - 1)),
            "num_clusters": experiment["num_clusters"],
            "loss_weight": experiment["loss_weight"],
            "seed": experiment["seed"],
        },
    }


def codc_round_inputs(wildcards):
    """A round needs its labels (from all peers' previous round) and the member's previous-round weights."""
    options = codc_model_config(wildcards)["method_options"]
    inputs = {"labels": options["labels_path"], "weights": options["initial_weights"]}
    if "labels_path" in options["base_options"]:  # a CLS member keeps its own pseudo-labels as base task
        inputs["base_labels"] = options["base_options"]["labels_path"]
    return inputs


def codc_concatenation(experiment):
    """The name of the concatenation of an experiment's members after its last round."""
    return f"{experiment}@r{config['codc'][experiment]['rounds']}.concat"


def concatenations():
    """Concatenated models: the config's, and each CODC experiment's members after its last round."""
    named = {name: list(members) for name, members in config["concatenations"].items()}
    for name, experiment in config["codc"].items():
        named[codc_concatenation(name)] = [
            codc_member_model(name, m, experiment["rounds"]) for m in experiment["members"]
        ]
    return named


def concatenation_names():
    return list(concatenations())


def concatenation_member_features(wildcards):
    return [
        f"{RESULTS}/features/{member}/{wildcards.split}.npz" for member in concatenations()[wildcards.model]
    ]


def ablation_entries():
    """The cells of the seed's Table 2: experiment, member, stage, and the per-layer SVM results to read."""
    entries = []
    controls = config["ablation"]["controls"]
    for experiment in config["ablation"]["experiments"]:
        members = config["codc"][experiment]["members"]
        for member in members:
            entries.append(
                [experiment, member, "before", svm_outputs(codc_member_model(experiment, member, 0))]
            )
            final = codc_member_model(experiment, member, config["codc"][experiment]["rounds"])
            entries.append([experiment, member, "after", svm_outputs(final)])
        entries.append([experiment, members[0], "concatenate", svm_outputs(codc_concatenation(experiment))])
        if experiment in controls:
            control = controls[experiment]
            for member in config["codc"][control]["members"]:
                final = codc_member_model(control, member, config["codc"][control]["rounds"])
                entries.append([experiment, member, "control_after", svm_outputs(final)])
            entries.append(
                [experiment, members[0], "control_concatenate", svm_outputs(codc_concatenation(control))]
            )
    return entries


def ablation_inputs(wildcards=None):
    return [path for entry in ablation_entries() for path in entry[3]]


def ablation_outputs():
    if not config["ablation"]["experiments"]:
        return []
    return multiext(f"{RESULTS}/tables/codc_ablation", ".csv", ".md", ".tex")


def models_with_method(*methods):
    return [name for name, model in config["models"].items() if model["method"] in methods]


def snapshot_models(model):
    return [f"{model}@e{epoch}" for epoch in config["models"][model].get("snapshot_epochs", [])]


def svm_outputs(model):
    layers = config["evaluation"]["voc07_svm"]["layers"]
    return [f"{RESULTS}/eval/{model}/voc07_svm/{layer}.json" for layer in layers]


def lowshot_outputs(model):
    layers = config["evaluation"]["voc07_lowshot"]["layers"]
    return [f"{RESULTS}/eval/{model}/voc07_lowshot/{layer}.json" for layer in layers]


def linear_probe_output(model):
    return f"{RESULTS}/eval/{model}/places205_linear.json"


def imagenet_linear_output(model):
    return f"{RESULTS}/eval/{model}/imagenet_linear.json"


def imagenet_linear_models():
    """The legacy ImageNet track, when enabled, probes every model with a trunk (not the concatenations)."""
    if not config["evaluation"]["imagenet_linear"]["enabled"]:
        return []
    return pretrained_models() + codc_final_models()


def evaluation_outputs():
    outputs = {
        model: {
            "voc07_svm": svm_outputs(model),
            "voc07_lowshot": lowshot_outputs(model),
            "places205_linear": [linear_probe_output(model)],
        }
        for model in model_names()
    }
    for model in imagenet_linear_models():
        outputs[model]["imagenet_linear"] = [imagenet_linear_output(model)]
    return outputs


def all_evaluation_files(wildcards=None):
    return [path for tracks in evaluation_outputs().values() for paths in tracks.values() for path in paths]


def codc_round_models():
    """Every member after every round of every CODC experiment."""
    return [
        codc_member_model(name, member, round_)
        for name, experiment in config["codc"].items()
        for round_ in range(1, experiment["rounds"] + 1)
        for member in experiment["members"]
    ]


def pretrain_benchmarks(wildcards=None):
    """The wall time of every training job (pretraining and CODC rounds), for the stage-time table."""
    return [
        f"{RESULTS}/benchmarks/pretrain/{model}.tsv" for model in pretrained_models() + codc_round_models()
    ]


def leaderboard_outputs():
    return multiext(f"{RESULTS}/tables/leaderboard", ".csv", ".md", ".tex") + [
        f"{RESULTS}/tables/stage_times.csv",
        f"{RESULTS}/plots/lowshot.png",
    ]


def dc_vs_odc_spec():
    """Per DC/ODC model: its final and intermediate evaluations, for the time-to-accuracy table and plot."""
    return {
        model: {
            "method": config["models"][model]["method"],
            "model": f"{RESULTS}/models/{model}/model.pth",
            "benchmark": f"{RESULTS}/benchmarks/pretrain/{model}.tsv",
            "voc07_svm": svm_outputs(model),
            "voc07_lowshot": lowshot_outputs(model),
            "snapshots": {
                snapshot: {
                    "model": f"{RESULTS}/models/{snapshot}/model.pth",
                    "voc07_svm": svm_outputs(snapshot),
                }
                for snapshot in snapshot_models(model)
            },
        }
        for model in models_with_method("dc", "odc")
    }


def dc_vs_odc_inputs(wildcards=None):
    files = []
    for entry in dc_vs_odc_spec().values():
        files += [entry["model"], entry["benchmark"]] + entry["voc07_svm"] + entry["voc07_lowshot"]
        for snapshot in entry["snapshots"].values():
            files += [snapshot["model"]] + snapshot["voc07_svm"]
    return files


def dc_vs_odc_outputs():
    """The DC vs ODC table exists when the config has both methods."""
    methods = {config["models"][model]["method"] for model in models_with_method("dc", "odc")}
    if methods != {"dc", "odc"}:
        return []
    return multiext(f"{RESULTS}/tables/dc_vs_odc", ".csv", ".md") + [f"{RESULTS}/plots/dc_vs_odc.png"]


def linear_probe_input(wildcards):
    """Cached mode trains on extracted features; online mode runs the frozen trunk over the images."""
    cached = config["evaluation"]["places205_linear"]["mode"] == "cached"
    if cached or wildcards.model in concatenations():  # a concatenation has features, not a trunk
        return {
            "train": f"{RESULTS}/features/{wildcards.model}/places205_train.npz",
            "val": f"{RESULTS}/features/{wildcards.model}/places205_val.npz",
        }
    return {"model": f"{RESULTS}/models/{wildcards.model}/model.pth", "data": data_input()}


check_config()  # before any job runs (the functions it uses are defined above)
