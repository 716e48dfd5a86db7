"""Pretraining orchestration: the run folder of one model, an in-process or torchrun launch, and the body of one
pretraining process (the training loop itself is ``engine.train``)."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from . import provenance
from .config import ConfigError, from_dict
from .data.imagenet import image_list_digest
from .io import atomic_path, write_json_atomic
from .numerics import configure_torch


def config_digest(config: dict) -> str:
    """The name of a run folder: 12 hex digits of the SHA-256 of ``config`` as sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def copy_atomic(source: str | Path, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def run_identity(model_config: dict, pretrain_data: dict, imagenet_root: str,
                 data_files: Sequence[str] = ()) -> dict:
    """Everything that determines a pretraining run's result: the model's config, the pretraining data config,
    the code it runs (``provenance``: this module's import closure and the method modules), the image list
    (relative paths and sizes, never the images' bytes), and the content of the files it reads (the data set's
    manifest, pseudo-labels, previous-round weights), and whether the CPU numerics are deterministic (a different
    result, ``ssl_challenge.numerics``)."""
    from .numerics import deterministic_requested

    code_entries = [Path(__file__)] + provenance.method_files(provenance.training_methods(model_config))
    return {
        "model": model_config,
        "pretrain_data": pretrain_data,
        "code": provenance.code_digest(code_entries),
        "images": image_list_digest(imagenet_root, "train"),
        "data_files": {str(path): file_digest(path) for path in data_files},
        "input_files": input_file_digests(model_config.get("method_options", {})),
        "deterministic_numerics": deterministic_requested(),
    }


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
    data_files: Sequence[str] = (),
    data_workers: int = 0,
) -> None:
    """Pretrain one model in ``runs/<identity digest>/`` beside the output (see ``run_identity``): whatever
    changes the result starts a new run, while a killed run of the same identity continues from its checkpoint.

    A finished run is never reused: this function runs only when Snakemake finds the output missing, stale or
    forced, so a run folder that already holds a final model is discarded and the model trained again. With
    ``processes > 1`` (a rule given several GPUs) the run goes through ``torchrun``, one process per GPU.
    ``data_workers`` (``resources.data_workers``, per process) is not part of the identity: it changes no result."""
    identity = run_identity(model_config, pretrain_data, imagenet_root, data_files)
    run_dir = Path(model_output).parent / "runs" / config_digest(identity)
    if (run_dir / "model.pth").exists():
        log.info("%s holds a finished run: training again from scratch (the job runs only when its output is "
                 "missing, stale or forced)", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "identity.json", identity)
    log.info("run folder %s (code digest %s, image list %s)", run_dir, identity["code"], identity["images"])
    request = {"model_config": model_config, "pretrain_data": pretrain_data, "imagenet_root": imagenet_root,
               "run_dir": str(run_dir), "threads": max(1, threads // max(1, processes)),
               "where": f"models.{Path(model_output).parent.name}", "data_workers": data_workers}
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
    from .data.imagenet import pretraining_images
    from .engine import distributed
    from .engine.train import PretrainConfig, pretrain

    configure_torch(request["threads"])
    device = distributed.init_from_environment()
    config = from_dict(PretrainConfig, request["model_config"], where=request["where"])
    images = pretraining_images(request["imagenet_root"], request["pretrain_data"], request["threads"], log,
                                augmentation=config.augmentation)
    try:
        return pretrain(config, images, request["run_dir"], device, log=log, name=request["where"],
                        data_workers=request.get("data_workers", 0))
    except ConfigError as error:  # method options are checked when the method is built: name the model's key
        raise ConfigError(f"config key {request['where']}.{error}") from error


FILE_OPTION_KEYS = ("labels_path", "initial_weights")


def input_file_digests(method_options: dict) -> dict:
    """Content digests of the files a method reads (pseudo-labels, previous-round weights), nested options
    included: a run directory belongs to one configuration *and* one set of inputs, so new labels under the same
    path start a new run instead of resuming one trained on the old labels."""
    digests = {}
    for key, value in method_options.items():
        if key in FILE_OPTION_KEYS and value:
            digests[key] = file_digest(value)
        elif isinstance(value, dict):
            nested = input_file_digests(value)
            if nested:
                digests[key] = nested
    return digests


def file_digest(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
