"""Pretraining orchestration: the run folder of one model, an in-process or torchrun launch (one node, or several
nodes of a SLURM job), and the body of one pretraining process: it builds the method and hands it to the training
loop (``engine.train``, which never imports the methods).

Run as ``python -m ssl_challenge.stages.pretraining request.json``, it is the body of one torchrun worker."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from .. import methods
from ..core import provenance, run_files
from ..core.config import ConfigError, from_dict
from ..data.imagenet import image_list_digest
from ..core.io import atomic_path, config_digest, file_digest, write_json_atomic
from ..core.numerics import start_numerics


def copy_atomic(source: str | Path, target: str | Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def run_identity(model_config: dict, pretrain_data: dict, imagenet_root: str,
                 data_files: Sequence[str] = ()) -> dict:
    """Everything that determines a pretraining run's result: the model's config, the pretraining data config,
    the code it runs (``provenance``: this module's import closure and the method modules), the image list
    (relative paths and sizes, never the images' bytes), and the content of the files it reads (the data set's
    manifest, pseudo-labels, previous-round weights), and whether the CPU numerics are deterministic (a different
    result, ``ssl_challenge.core.numerics``)."""
    from ..core.numerics import deterministic_requested

    method, options = model_config["method"], model_config.get("method_options", {})
    code_entries = [Path(__file__)] + provenance.method_files(methods.built_methods(method, options))
    return {
        "model": model_config,
        "pretrain_data": pretrain_data,
        "code": provenance.code_digest(code_entries),
        "images": image_list_digest(imagenet_root, "train"),
        "data_files": {str(path): file_digest(path) for path in data_files},
        "input_files": input_file_digests(method, options),
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
    nodes: int = 1,
    gpus: bool = False,
    data_workers: int = 0,
) -> None:
    """Pretrain one model in ``runs/<identity digest>/`` beside the output (see ``run_identity``): whatever
    changes the result starts a new run, while a killed run of the same identity continues from its checkpoint.

    A finished run is never reused: this function runs only when Snakemake finds the output missing, stale or
    forced, so a run folder that already holds a final model is discarded and the model trained again. With
    ``processes > 1`` (a rule given several GPUs) the run goes through ``torchrun``, one process per GPU;
    ``nodes > 1`` (the rule's ``nodes`` resource, a SLURM job of several nodes) spreads them over the nodes,
    ``processes / nodes`` on each (``gpus``: one GPU per process).
    ``data_workers`` (``resources.data_workers``, per process) is not part of the identity: it changes no result."""
    identity = run_identity(model_config, pretrain_data, imagenet_root, data_files)
    run_dir = Path(model_output).parent / "runs" / config_digest(identity)
    if (run_dir / run_files.MODEL).exists():
        log.info("%s holds a finished run: training again from scratch (the job runs only when its output is "
                 "missing, stale or forced)", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / run_files.IDENTITY, identity)
    log.info("run folder %s (code digest %s, image list %s)", run_dir, identity["code"], identity["images"])
    request = {"model_config": model_config, "pretrain_data": pretrain_data, "imagenet_root": imagenet_root,
               "run_dir": str(run_dir), "threads": max(1, threads // max(1, processes // max(1, nodes))),
               "where": f"models.{Path(model_output).parent.name}", "data_workers": data_workers}
    if methods.method_spec(model_config["method"]).converts:  # nothing to train: a checkpoint becomes the model
        convert_checkpoint(model_config, run_dir, request["where"], log)
    elif processes > 1 or nodes > 1:
        launch_torchrun(request, processes, log, nodes, gpus)
    else:
        run_pretraining(request, log.info)
    copy_atomic(run_dir / run_files.METRICS, metrics_output)
    if snapshots_output:  # intermediate backbones (snapshot_epochs), for time-to-accuracy curves
        Path(snapshots_output).mkdir(parents=True, exist_ok=True)
        for snapshot in sorted((run_dir / run_files.SNAPSHOTS).glob(run_files.SNAPSHOT_PATTERN)):
            copy_atomic(snapshot, Path(snapshots_output) / snapshot.name)
    copy_atomic(run_dir / run_files.MODEL, model_output)


def convert_checkpoint(model_config: dict, run_dir: Path, where: str, log: logging.Logger) -> Path:
    """A method that converts a checkpoint instead of training (its declaration's ``converts``: external): its
    module's ``convert`` writes the run's model file, with empty metrics. ``where`` is the model's config key."""
    if model_config.get("epochs", 0) != 0:
        raise ConfigError(f"config key {where}.epochs: method {model_config['method']!r} is not trained here (its "
                          "job converts a checkpoint); set it to 0")
    from ..core.io import write_text_atomic

    methods.method_module(model_config["method"]).convert(model_config["backbone"],
                                                           model_config.get("method_options", {}),
                                                           run_dir / run_files.MODEL, where, log)
    write_text_atomic(run_dir / run_files.METRICS, "")
    return run_dir / run_files.MODEL


def launch_torchrun(request: dict, processes: int, log: logging.Logger, nodes: int = 1, gpus: bool = False) -> None:
    """Run the request in ``processes`` torchrun workers (this module's ``main``): on this node, or, with
    ``nodes > 1``, through srun on every node of the SLURM job (``engine.launch``)."""
    from ..engine.launch import srun_argv, torchrun_argv

    if nodes < 1 or processes % nodes:
        raise ConfigError(f"{request['where']}: {processes} processes (resources gpu) do not split over {nodes} "
                          "nodes (resources nodes); ask for a multiple of the node count")
    run_dir = Path(request["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    request_path = run_dir / "request.json"
    write_json_atomic(request_path, request)
    worker = ["-m", "ssl_challenge.stages.pretraining", str(request_path)]
    if nodes > 1:
        command = srun_argv(nodes, processes // nodes, worker, gpus=gpus)
    else:
        command = torchrun_argv(processes, worker, env={})
    log.info("launching %s", " ".join(command))
    run_logged(command, log)


def run_logged(command: Sequence[str], log: logging.Logger) -> None:
    """Run ``command`` with its stdout and stderr (torchrun's workers: progress, diagnostics, tracebacks) sent
    line by line to ``log`` -- the rule's log -- instead of the terminal Snakemake runs in; raise
    ``CalledProcessError`` (with the last lines) when it fails."""
    last_lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as process:
        for line in process.stdout:
            line = line.rstrip("\n")
            log.info("%s", line)
            last_lines = (last_lines + [line])[-20:]
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, list(command), output="\n".join(last_lines))


def build_pretraining_method(config, num_samples: int):
    """The method of ``config`` (an ``engine.settings.PretrainConfig``) with its backbone, for ``num_samples``
    training images, initialised from the run's seed (the same weights on every process and every rerun)."""
    from ..engine.train import seed_initialisation
    from ..methods import build_method
    from ..models.backbones import build_backbone

    seed_initialisation(config.seed)
    return build_method(config.method, build_backbone(config.backbone), config.method_options, num_samples)


def pretrain_config(config, where: str = "model"):
    """The engine's ``PretrainConfig`` of a model's config entry (a dict, as the rule passes it; ``where``: its
    config key), or ``config`` itself when it is one already: the one conversion a model's config goes through."""
    from ..engine.settings import PretrainConfig

    return config if isinstance(config, PretrainConfig) else from_dict(PretrainConfig, config, where=where)


def train(config, images, run_dir: str | Path, device, **options) -> Path | None:
    """Build the method of ``config`` (a dict or ``engine.settings.PretrainConfig``) for ``images`` and run the
    training loop on it (``engine.train.pretrain``: ``options`` are its keyword arguments)."""
    from ..engine.train import pretrain

    config = pretrain_config(config)
    return pretrain(config, build_pretraining_method(config, len(images)), images, run_dir, device, **options)


def run_pretraining(request: dict, log) -> Path | None:
    """The body of one pretraining process (in-process, or each torchrun worker via ``engine.launch``)."""
    from ..data.imagenet import pretraining_images
    from ..engine import distributed
    from ..engine.settings import check_run_settings

    start_numerics(request["threads"])
    device = distributed.init_from_environment()
    config = pretrain_config(request["model_config"], where=request["where"])
    try:
        check_run_settings(config, device, distributed.world_size())  # before the images load
        images = pretraining_images(request["imagenet_root"], request["pretrain_data"], request["threads"], log,
                                    augmentation=config.augmentation)
        return train(config, images, request["run_dir"], device, log=log, name=request["where"],
                     data_workers=request.get("data_workers", 0))
    except ConfigError as error:  # method options are checked when the method is built: name the model's key
        raise ConfigError(f"config key {request['where']}.{error}") from error


def main(request_path: str) -> None:
    """The body of one torchrun worker (``python -m ssl_challenge.stages.pretraining request.json``)."""
    from ..engine import distributed

    with open(request_path) as handle:
        request = json.load(handle)

    def log(message: str) -> None:
        if distributed.rank() == 0:
            print(message, flush=True)

    try:
        run_pretraining(request, log)
    finally:
        if distributed.is_initialized():
            distributed.dist.destroy_process_group()


def input_file_digests(method: str, method_options: dict) -> dict:
    """Content digests of the files a method reads (its declaration's input files: pseudo-labels, previous-round
    weights, a checkpoint), a wrapped method's included, nested as the options are: a run directory belongs to one
    configuration *and* one set of inputs, so new labels under the same path start a new run instead of resuming
    one trained on the old labels."""
    digests: dict = {}
    for entry in methods.input_files(method, method_options):
        node = digests
        for part in entry.path[:-1]:
            node = node.setdefault(part, {})
        node[entry.path[-1]] = file_digest(entry.file)
    return digests


if __name__ == "__main__":
    main(sys.argv[1])
