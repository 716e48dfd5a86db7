# Input functions, wildcard constraints and helpers of the workflow. No rules here.
# Nothing in this file imports torch: the DAG must build in well under a second or two.
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from ssl_challenge.data import layouts  # noqa: E402  (torch-free)

RESULTS = "results"
SRC = Path(workflow.basedir) / "src" / "ssl_challenge"
FEATURE_SPLITS = ["voc07_trainval", "voc07_test", "places205_train", "places205_val"]
TRACKS = ["voc07_svm", "voc07_lowshot", "places205_linear"]


wildcard_constraints:
    model="[a-z][a-z0-9_]*",
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


def check_config():
    """Fail at DAG-build time, naming the config key, for what the schema cannot see."""
    if not config["models"]:
        raise ValueError("config key 'models' is empty: name at least one model to pretrain and evaluate")
    data = config["data"]
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


check_config()


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
CODE_MODULES = {
    "common": ["__init__.py", "config.py", "io.py"],
    "data": ["data"],
    "models": ["models"],
    "engine": ["engine", "methods/__init__.py", "methods/base.py"],
    "random": ["methods/random_init.py"],
    "rot": ["methods/rotation.py"],
    "dc": ["methods/dc.py", "clustering"],
    "odc": ["methods/odc.py", "methods/odc_memory.py", "clustering"],
    "features": ["features.py"],
    "svm": ["evaluation/ap.py", "evaluation/svm.py"],
    "lowshot": ["evaluation/ap.py", "evaluation/svm.py", "evaluation/lowshot.py"],
    "linear_probe": ["evaluation/linear_probe.py"],
    "tables": ["tables.py"],
}


def code_digest(*groups):
    """SHA-256 over the library files a stage runs, passed as a param; editing them marks the stage stale.

    Snakemake tracks a rule's script but not the modules it imports, so each rule names its groups here.
    """
    digest = hashlib.sha256()
    for group in ("common",) + groups:
        for relative in CODE_MODULES[group]:
            path = SRC / relative
            files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
            for file in files:
                if file.exists():
                    digest.update(str(file.relative_to(SRC)).encode())
                    digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def pretrain_code(wildcards):
    method = config["models"][wildcards.model]["method"]
    return code_digest("data", "models", "engine", method)


# ---------------------------------------------------------------- targets
def model_names():
    return list(config["models"])


def svm_outputs(model):
    layers = config["evaluation"]["voc07_svm"]["layers"]
    return [f"{RESULTS}/eval/{model}/voc07_svm/{layer}.json" for layer in layers]


def lowshot_outputs(model):
    layers = config["evaluation"]["voc07_lowshot"]["layers"]
    return [f"{RESULTS}/eval/{model}/voc07_lowshot/{layer}.json" for layer in layers]


def linear_probe_output(model):
    return f"{RESULTS}/eval/{model}/places205_linear.json"


def evaluation_outputs():
    return {
        model: {
            "voc07_svm": svm_outputs(model),
            "voc07_lowshot": lowshot_outputs(model),
            "places205_linear": [linear_probe_output(model)],
        }
        for model in model_names()
    }


def all_evaluation_files(wildcards=None):
    return [path for tracks in evaluation_outputs().values() for paths in tracks.values() for path in paths]


def pretrain_benchmarks(wildcards=None):
    return [f"{RESULTS}/benchmarks/pretrain/{model}.tsv" for model in model_names()]


def leaderboard_outputs():
    return multiext(f"{RESULTS}/tables/leaderboard", ".csv", ".md", ".tex") + [
        f"{RESULTS}/tables/stage_times.csv",
        f"{RESULTS}/plots/lowshot.png",
    ]


def linear_probe_input(wildcards):
    """Cached mode trains on extracted features; online mode runs the frozen trunk over the images."""
    if config["evaluation"]["places205_linear"]["mode"] == "cached":
        return {
            "train": f"{RESULTS}/features/{wildcards.model}/places205_train.npz",
            "val": f"{RESULTS}/features/{wildcards.model}/places205_val.npz",
        }
    return {"model": f"{RESULTS}/models/{wildcards.model}/model.pth", "data": data_input()}
