"""Track 3, the workflow stage: the Places205 linear probe of one model, online (through the frozen trunk, or a
concatenation's members' trunks) or on cached features."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np

from ..core.config import from_dict
from ..core.devices import select_device
from ..core.io import write_json_atomic, write_text_atomic
from ..core.numerics import start_numerics


def places205_probe_online(model_paths, probe_config, features_config, places205_root, config, log,
                           checkpointing=None, workers: int = 0) -> dict:
    """The reference probe: frozen trunks over the images (one model file; a concatenation's members' files, their
    pooled maps joined per layer); training Resize, CenterCrop, RandomCrop and flip, validation Resize and
    CenterCrop (``data.probe_images``), at features.resize_shorter / features.image_size. Resumable from
    ``checkpointing`` (``online_probe.ProbeCheckpointing``)."""
    from ..data.probe_images import ProbeImages
    from ..data.splits import split_images
    from .features import pooling_target
    from ..models.backbones import load_backbone
    from ..models.pooling import pooling_plan
    from .online_probe import ProbeCheckpointing, train_linear_probe_online

    device = select_device()
    trunks = [load_backbone(path, device)[0] for path in model_paths]
    roots = {"places205": places205_root}
    size, shorter = features_config["image_size"], features_config["resize_shorter"]
    sources, labels = {}, {}
    for subset in ("train", "val"):
        paths, _, labels[subset] = split_images(f"places205_{subset}", roots, [])
        sources[subset] = ProbeImages(paths, resize_shorter=shorter, crop_size=size, dataset=f"places205_{subset}")
    plans = [pooling_plan(trunk, size, pooling_target(features_config)) for trunk in trunks]
    log.info("online probe through %d trunk(s): %d train, %d val images", len(trunks), len(sources["train"]),
             len(sources["val"]))
    return train_linear_probe_online(trunks, sources["train"], sources["val"], labels["train"], labels["val"],
                                     list(probe_config["layers"]), plans, config, device, probe_config["seed"],
                                     checkpointing=checkpointing or ProbeCheckpointing(), workers=workers)


def places205_probe_cached(inputs, probe_config, config) -> dict:
    """The embedded default's probe: features extracted once without augmentation (a documented deviation)."""
    from ..data.feature_files import load_features
    from ..evaluation.linear_probe import channel_blocks_of, train_linear_probe_on_features

    layers = list(probe_config["layers"])
    train, train_meta = load_features(inputs["train"], layers)
    val, val_meta = load_features(inputs["val"], layers)
    return train_linear_probe_on_features(
        train, np.asarray(train_meta["labels"]), val, np.asarray(val_meta["labels"]), config,
        device=select_device(), seed=probe_config["seed"], channel_blocks=channel_blocks_of(train_meta, layers),
    )


def evaluate_places205_linear(inputs: dict, probe_config: dict, features_config: dict, places205_root: str,
                              output: str, metrics_output: str, threads: int, log: logging.Logger,
                              predictions_output: str | None = None, data_workers: int = 0,
                              checkpoint_every: int = 500) -> None:
    """The probe of one model. Online, its checkpoint and per-epoch records live in ``<output>.state/`` until
    the outputs are written (a killed job's rerun continues there: ``resources.probe_checkpoint_every``)."""
    from ..evaluation.linear_probe import LinearProbeConfig
    from .online_probe import ProbeCheckpointing

    start_numerics(threads)
    options = {key: probe_config[key] for key in ("epochs", "milestones", "lr", "batch_size")}
    config = from_dict(LinearProbeConfig, options, where="evaluation.places205_linear")
    model_paths = online_model_paths(inputs)
    if model_paths:
        checkpointing = ProbeCheckpointing(probe_state_dir(output), checkpoint_every)
        result = places205_probe_online(model_paths, probe_config, features_config, places205_root, config, log,
                                        checkpointing, data_workers)
    else:
        result = places205_probe_cached(inputs, probe_config, config)
    epochs = result.pop("epochs_log", [])
    predictions = result.pop("val_predictions", None)
    if predictions_output:  # the best layer's val predictions, for the challenge's Places205 submission file
        from ..core.io import atomic_path

        with atomic_path(predictions_output) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, predictions=np.asarray(predictions, dtype=np.int64),
                         layer=np.asarray(result["best_layer"]))
    write_text_atomic(metrics_output, "".join(json.dumps(record) + "\n" for record in epochs))
    write_json_atomic(output, result)
    shutil.rmtree(probe_state_dir(output), ignore_errors=True)  # finished: a forced rerun starts afresh
    log.info("places205 top-1 per layer: %s", result["top1"])


def online_model_paths(inputs: dict) -> list[str]:
    """The model files an online probe runs (``inputs["model"]``, or a concatenation's ``inputs["members"]`` in
    member order); none in cached mode, whose inputs are the feature files ``train`` and ``val``."""
    if "model" in inputs:
        return [str(inputs["model"])]
    return [str(path) for path in inputs.get("members", [])]


def probe_state_dir(output: str) -> str:
    """Where the online probe of ``output`` keeps its checkpoint while it runs (not a rule output, so that
    Snakemake keeps it when a job is killed)."""
    return f"{output}.state"
