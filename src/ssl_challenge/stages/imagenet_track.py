"""The legacy ImageNet linear classification track (``evaluation.imagenet_linear``): the Places205 probe --
per-channel BatchNorm + fc heads per layer, the same training and validation pipelines
(``data.probe_images``) -- on ``<imagenet_root>/train/<wnid>/`` and ``val/<wnid>/``, class = folder.

The reference (OpenSelfSup configs/benchmarks/linear_classification/imagenet/r50_multihead.py) trains 90 epochs,
lr 0.01 x0.1 at epochs 30, 60, 90, SGD Nesterov momentum 0.9, weight decay 1e-4 (0 on BatchNorm), batch 256; its
training crop is RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4, 0.4) + lighting noise, where this track
uses the Places205 probe's crops (the track's schema description says so). Online only: cached features of the
1.28M training images would take about 47 GB per layer at the reference 9k dimensions.
"""
from __future__ import annotations

import json
import logging
import shutil

from ..core.config import from_dict
from ..core.devices import select_device
from ..core.io import write_json_atomic, write_text_atomic
from ..core.numerics import start_numerics

PROBE_KEYS = ("epochs", "milestones", "lr", "batch_size")


def evaluate_imagenet_linear(model_path: str, probe_config: dict, features_config: dict, imagenet_root: str,
                             output: str, metrics_output: str, threads: int, log: logging.Logger,
                             data_workers: int = 0, checkpoint_every: int = 500) -> dict:
    """Probe the frozen backbone of ``model_path``; writes the top-1 per layer (``output``, JSON) and the
    per-epoch records (``metrics_output``, JSON lines). Images: Resize ``features.resize_shorter``, crops of
    ``features.image_size``; pooling: ``features.pooling``. Resumable: checkpoints in ``<output>.state/`` every
    ``checkpoint_every`` iterations (``resources.probe_checkpoint_every``) and on SIGTERM/SIGUSR1."""
    from ..data.imagenet import list_imagenet_labelled
    from ..data.probe_images import ProbeImages
    from .features import pooling_target
    from ..models.backbones import load_backbone
    from ..models.pooling import pooling_plan
    from ..evaluation.linear_probe import LinearProbeConfig
    from .online_probe import ProbeCheckpointing, train_linear_probe_online
    from .places205_track import probe_state_dir

    start_numerics(threads)
    config = from_dict(LinearProbeConfig, {key: probe_config[key] for key in PROBE_KEYS},
                       where="evaluation.imagenet_linear")
    device = select_device()
    backbone, _ = load_backbone(model_path, device)
    train_paths, train_labels, classes = list_imagenet_labelled(imagenet_root, "train")
    val_paths, val_labels, _ = list_imagenet_labelled(imagenet_root, "val", classes)
    shorter, size = features_config["resize_shorter"], features_config["image_size"]
    train = ProbeImages(train_paths, resize_shorter=shorter, crop_size=size, threads=threads, dataset="imagenet train")
    val = ProbeImages(val_paths, resize_shorter=shorter, crop_size=size, threads=threads, dataset="imagenet val")
    plan = pooling_plan(backbone, size, pooling_target(features_config))
    log.info("imagenet linear: %d train, %d val images, %d classes", len(train), len(val), len(classes))
    result = train_linear_probe_online([backbone], train, val, train_labels, val_labels, list(probe_config["layers"]),
                                       [plan], config, device, probe_config["seed"], num_classes=len(classes),
                                       checkpointing=ProbeCheckpointing(probe_state_dir(output), checkpoint_every),
                                       workers=data_workers)
    epochs = result.pop("epochs_log", [])
    result.pop("val_predictions", None)  # the submission files have no ImageNet format
    write_text_atomic(metrics_output, "".join(json.dumps(record) + "\n" for record in epochs))
    write_json_atomic(output, result)
    shutil.rmtree(probe_state_dir(output), ignore_errors=True)  # finished: a forced rerun starts afresh
    log.info("imagenet top-1 per layer: %s", result["top1"])
    return result
