"""One function per workflow stage: typed config in, files out. The Snakemake scripts are thin adapters to these.

Heavy imports (torch, scikit-learn) happen inside the functions so that importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import ConfigError, from_dict
from .io import atomic_path, write_json_atomic

FEATURE_SPLITS = {
    "voc07_trainval": ("voc07", "trainval"),
    "voc07_test": ("voc07", "test"),
    "places205_train": ("places205", "train"),
    "places205_val": ("places205", "val"),
}


def select_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def copy_atomic(source: str | Path, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


# ------------------------------------------------------------------------------------------------ data
def prepare_embedded_data(embedded: dict, out_root: str | Path, log: logging.Logger) -> dict:
    """Build the embedded data set under ``out_root``; ``manifest.json`` is written last (the rule's output)."""
    from .data.embedded import build_embedded_data

    options = dict(embedded)
    fashion_mnist_dir = options.pop("fashion_mnist_dir")
    out_root = Path(out_root)
    for stale in ("imagenet", "VOCdevkit", "places205"):  # a killed build leaves partial trees: start clean
        shutil.rmtree(out_root / stale, ignore_errors=True)
    manifest = build_embedded_data(fashion_mnist_dir, out_root, **options)
    log.info("embedded data: %s", json.dumps({k: v for k, v in manifest.items() if k != "sources"}))
    return manifest


def split_images(split: str, roots: dict, classes: Sequence[str]) -> tuple[list[Path], list[str], np.ndarray | None]:
    """Image paths, image ids and (for Places205) labels of an evaluation split, in the file lists' order."""
    dataset, subset = FEATURE_SPLITS[split]
    if dataset == "voc07":
        from .data.voc07 import read_voc07_labels, voc07_class_names

        root = Path(roots["voc07"])
        ids, _ = read_voc07_labels(root, subset, list(classes) or voc07_class_names(root))
        return [root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg" for image_id in ids], ids, None
    from .data.places205 import places205_image_paths, read_places205_list

    root = Path(roots["places205"])
    relative_paths, labels = read_places205_list(root, subset)
    return places205_image_paths(root, relative_paths), list(relative_paths), labels


# ------------------------------------------------------------------------------------------------ pretraining
def pretrain_model(
    model_config: dict,
    pretrain_data: dict,
    imagenet_root: str,
    model_output: str,
    metrics_output: str,
    threads: int,
    log: logging.Logger,
    processes: int = 1,
    snapshots_output: str | None = None,
) -> None:
    """Pretrain (or resume) one model. Runs live in ``runs/<config digest>/`` beside the output, so a changed
    config starts afresh while a killed run of the same config continues from its checkpoint. With
    ``processes > 1`` (a rule given several GPUs) the run goes through ``torchrun``, one process per GPU."""
    inputs = input_file_digests(model_config.get("method_options", {}))
    run_dir = Path(model_output).parent / "runs" / config_digest(model_config | {"data": pretrain_data,
                                                                                  "input_files": inputs})
    request = {"model_config": model_config, "pretrain_data": pretrain_data, "imagenet_root": imagenet_root,
               "run_dir": str(run_dir), "threads": max(1, threads // max(1, processes)),
               "where": f"models.{Path(model_output).parent.name}"}
    if processes > 1:
        launch_torchrun(request, processes, log)
    else:
        run_pretraining(request, log.info)
    copy_atomic(run_dir / "metrics.jsonl", metrics_output)
    if snapshots_output:  # intermediate backbones (snapshot_epochs), for time-to-accuracy curves
        Path(snapshots_output).mkdir(parents=True, exist_ok=True)
        for snapshot in sorted((run_dir / "snapshots").glob("epoch_*.pth")):
            copy_atomic(snapshot, Path(snapshots_output) / snapshot.name)
    copy_atomic(run_dir / "model.pth", model_output)


def launch_torchrun(request: dict, processes: int, log: logging.Logger) -> None:
    import subprocess
    import sys

    run_dir = Path(request["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    request_path = run_dir / "request.json"
    write_json_atomic(request_path, request)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "ssl_challenge.engine.launch", str(request_path)]
    log.info("launching %s", " ".join(command))
    subprocess.run(command, check=True)


def run_pretraining(request: dict, log) -> Path | None:
    """The body of one pretraining process (in-process, or each torchrun worker via ``engine.launch``)."""
    import torch

    from .engine import distributed
    from .engine.train import PretrainConfig, pretrain

    torch.set_num_threads(request["threads"])
    device = distributed.init_from_environment()
    config = from_dict(PretrainConfig, request["model_config"], where=request["where"])
    images = pretraining_images(request["imagenet_root"], request["pretrain_data"], request["threads"], log,
                                augmentation=config.augmentation)
    try:
        return pretrain(config, images, request["run_dir"], device, log=log)
    except ConfigError as error:  # method options are checked when the method is built: name the model's key
        raise ConfigError(f"config key {request['where']}.{error}") from error


def pretraining_images(imagenet_root: str, pretrain_data: dict, threads: int, log, augmentation=None):
    """The pretraining set's image source (ImageNet layout, labels unused); index order is the list order, so
    pseudo-labels computed over it line up with the training samples. ``augmentation``: the model's pipeline
    (``AugmentationConfig``; None for the source's default crop and flip)."""
    from .data.images import build_image_source
    from .data.imagenet import list_imagenet_images

    paths = list_imagenet_images(imagenet_root, "train")
    log(f"{len(paths)} pretraining images under {imagenet_root}")
    return build_image_source(paths, preload=pretrain_data["preload"], resize_shorter=pretrain_data["resize_shorter"],
                              crop_size=pretrain_data["image_size"], crop_padding=pretrain_data["crop_padding"],
                              threads=threads, augmentation=augmentation)


FILE_OPTION_KEYS = ("labels_path", "initial_weights")


def input_file_digests(method_options: dict) -> dict:
    """Content digests of the files a method reads (pseudo-labels, previous-round weights), nested options
    included: a run directory belongs to one configuration *and* one set of inputs, so new labels under the same
    path start a new run instead of resuming one trained on the old labels."""
    digests = {}
    for key, value in method_options.items():
        if key in FILE_OPTION_KEYS and value:
            digest = hashlib.sha256()
            with open(value, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digests[key] = digest.hexdigest()[:16]
        elif isinstance(value, dict):
            nested = input_file_digests(value)
            if nested:
                digests[key] = nested
    return digests


# ------------------------------------------------------------------------------------------------ labels
def make_pseudo_labels(model_paths: Sequence[str], pretrain_data: dict, imagenet_root: str, num_clusters: int,
                       pca_dims: int, seed: int, output: str, threads: int, log: logging.Logger,
                       batch_size: int = 256, metadata: dict | None = None) -> None:
    """k-means labels of the pretraining images from the concatenated features of ``model_paths`` (CLS's
    supervision, or a CODC member's initial labels in a round)."""
    import torch

    from .pseudo_labels import labels_from_models

    torch.set_num_threads(threads)
    images = pretraining_images(imagenet_root, pretrain_data, threads, log.info)
    labels = labels_from_models(model_paths, images, num_clusters, pca_dims, seed, batch_size, select_device(),
                                output, metadata)
    sizes = np.bincount(labels, minlength=num_clusters)
    log.info("%d labels from %s: %d non-empty clusters of %d, largest %d", len(labels), list(model_paths),
             int((sizes > 0).sum()), num_clusters, int(sizes.max()))


def concatenate_model_features(paths: Sequence[str], output: str, layers: Sequence[str] | None,
                               log: logging.Logger) -> None:
    from .concat import concatenate_feature_files

    metadata = concatenate_feature_files(paths, output, layers)
    log.info("concatenated %s: %d images, dims %s", list(paths), metadata["num_images"],
             metadata["concatenation"]["member_dims"])


# ------------------------------------------------------------------------------------------------ features
def pooling_target(features_config: dict) -> int | str:
    pooling = features_config["pooling"]
    return pooling if pooling == "reference" else int(pooling)


def extract_split_features(
    model_path: str,
    split: str,
    features_config: dict,
    roots: dict,
    classes: Sequence[str],
    output: str,
    threads: int,
    log: logging.Logger,
) -> None:
    import torch

    from .data.images import load_image_tensor
    from .features import extract_features, save_features
    from .models.backbones import load_backbone
    from .models.pooling import pooling_plan

    torch.set_num_threads(threads)
    device = select_device()
    backbone, backbone_config = load_backbone(model_path, device)
    paths, ids, labels = split_images(split, roots, classes)
    images = load_image_tensor(paths, resize_shorter=features_config["resize_shorter"],
                               final_size=features_config["image_size"], threads=threads)
    plan = pooling_plan(backbone, features_config["image_size"], pooling_target(features_config))
    layers = list(features_config["layers"])
    features = extract_features(backbone, images, layers, plan, features_config["batch_size"], device)
    metadata = {
        "split": split,
        "image_ids": ids,
        "labels": None if labels is None else [int(label) for label in labels],
        "backbone_config": backbone_config,
        "pooling_plan": plan,
        "input_size": features_config["image_size"],
        "resize_shorter": features_config["resize_shorter"],
        "layers": layers,
        "model": str(model_path),
    }
    save_features(output, features, metadata)
    log.info("%s: %d images, dims %s", split, len(ids), {layer: plan[layer]["dim"] for layer in layers})


# ------------------------------------------------------------------------------------------------ VOC07 SVM tracks
def voc07_split_with_features(features_path, layer, voc07_root, subset, classes):
    """Features of ``layer`` and the VOC label matrix, checked to be in the same image order."""
    from .data.voc07 import read_voc07_labels, voc07_class_names
    from .features import load_features

    classes = list(classes) or voc07_class_names(voc07_root)
    features, metadata = load_features(features_path, [layer])
    ids, labels = read_voc07_labels(voc07_root, subset, classes)
    if list(metadata["image_ids"]) != list(ids):
        raise ValueError(f"{features_path}: image order differs from {voc07_root} ImageSets/Main/{subset}.txt; "
                         "re-extract the features")
    return features[layer], labels, classes


def evaluate_voc07_svm(trainval_features, test_features, layer, svm_config, voc07_root, classes, output,
                       n_jobs, log) -> None:
    from .evaluation.svm import protocol_costs, train_and_test_full_svm

    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    costs = protocol_costs(svm_config["costs"], svm_config["extra_powers"])
    log.info("layer %s: %s trainval, %s test, %d costs", layer, train_x.shape, test_x.shape, len(costs))
    result = train_and_test_full_svm(train_x, train_y, test_x, test_y, costs, classes, n_jobs=n_jobs,
                                     device=select_device())
    result.update(layer=layer, dim=int(train_x.shape[1]))
    write_json_atomic(output, result)
    log.info("layer %s: mAP %.2f", layer, result["map"])


def draw_voc07_lowshot_samples(lowshot_config, voc07_root, classes, output, log) -> None:
    from .data.voc07 import read_voc07_labels, voc07_class_names
    from .evaluation.lowshot import draw_lowshot_samples, save_lowshot_samples

    classes = list(classes) or voc07_class_names(voc07_root)
    ids, labels = read_voc07_labels(voc07_root, "trainval", classes)
    samples = draw_lowshot_samples(labels, lowshot_config["k_values"], lowshot_config["num_samples"],
                                   lowshot_config["seed"])
    samples["image_ids_digest"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
    save_lowshot_samples(output, samples)
    log.info("low-shot samples: k %s x %d samples", lowshot_config["k_values"], lowshot_config["num_samples"])


def evaluate_voc07_lowshot(trainval_features, test_features, samples_path, layer, lowshot_config, voc07_root,
                           classes, output, n_jobs, log) -> None:
    from .evaluation.lowshot import evaluate_lowshot, load_lowshot_samples
    from .evaluation.svm import protocol_costs

    train_x, train_y, classes = voc07_split_with_features(trainval_features, layer, voc07_root, "trainval", classes)
    test_x, test_y, _ = voc07_split_with_features(test_features, layer, voc07_root, "test", classes)
    samples = load_lowshot_samples(samples_path)
    costs = protocol_costs(lowshot_config["costs"], lowshot_config["extra_powers"])
    result = evaluate_lowshot(train_x, train_y, test_x, test_y, samples, costs, classes, n_jobs=n_jobs,
                              device=select_device())
    result.update(layer=layer, dim=int(train_x.shape[1]))
    write_json_atomic(output, result)
    log.info("layer %s: low-shot track score %.2f", layer, result["track_score"])


# ------------------------------------------------------------------------------------------------ Places205 probe
def places205_probe_online(inputs, probe_config, features_config, places205_root, config, log) -> dict:
    """The reference probe: frozen trunk over the images; training Resize, CenterCrop, RandomCrop and flip,
    validation Resize and CenterCrop (``data.probe_images``), at features.resize_shorter / features.image_size."""
    from .data.probe_images import ProbeImages
    from .evaluation.linear_probe import train_linear_probe_online
    from .models.backbones import load_backbone
    from .models.pooling import pooling_plan

    device = select_device()
    backbone, _ = load_backbone(inputs["model"], device)
    roots = {"places205": places205_root}
    size, shorter = features_config["image_size"], features_config["resize_shorter"]
    sources, labels = {}, {}
    for subset in ("train", "val"):
        paths, _, labels[subset] = split_images(f"places205_{subset}", roots, [])
        sources[subset] = ProbeImages(paths, resize_shorter=shorter, crop_size=size)
    plan = pooling_plan(backbone, size, pooling_target(features_config))
    log.info("online probe: %d train, %d val images", len(sources["train"]), len(sources["val"]))
    return train_linear_probe_online(backbone, sources["train"], sources["val"], labels["train"], labels["val"],
                                     list(probe_config["layers"]), plan, config, device, probe_config["seed"])


def places205_probe_cached(inputs, probe_config, config) -> dict:
    """The embedded default's probe: features extracted once without augmentation (a documented deviation)."""
    from .evaluation.linear_probe import channel_blocks_of, train_linear_probe_on_features
    from .features import load_features

    layers = list(probe_config["layers"])
    train, train_meta = load_features(inputs["train"], layers)
    val, val_meta = load_features(inputs["val"], layers)
    return train_linear_probe_on_features(
        train, np.asarray(train_meta["labels"]), val, np.asarray(val_meta["labels"]), config,
        device=select_device(), seed=probe_config["seed"], channel_blocks=channel_blocks_of(train_meta, layers),
    )


def evaluate_places205_linear(inputs, probe_config, features_config, places205_root, output, metrics_output,
                              threads, log) -> None:
    import torch

    from .evaluation.linear_probe import LinearProbeConfig
    from .io import write_text_atomic

    torch.set_num_threads(threads)
    options = {key: probe_config[key] for key in ("epochs", "milestones", "lr", "batch_size")}
    config = from_dict(LinearProbeConfig, options, where="evaluation.places205_linear")
    if "model" in inputs:  # online mode; a concatenation has only features and is probed on them
        result = places205_probe_online(inputs, probe_config, features_config, places205_root, config, log)
    else:
        result = places205_probe_cached(inputs, probe_config, config)
    epochs = result.pop("epochs_log", [])
    write_text_atomic(metrics_output, "".join(json.dumps(record) + "\n" for record in epochs))
    write_json_atomic(output, result)
    log.info("places205 top-1 per layer: %s", result["top1"])
