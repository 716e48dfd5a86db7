"""A pretraining process for the engine tests: ``python worker.py run_dir [method [epochs [seed [batch_size
[sync_bn]]]]]`` (killed and resumed by them).

With ``PAUSE_BEFORE_STEP=n`` and ``PAUSE_DIR=folder`` in its environment it stops before its n-th training step
(counted from its own start), writes ``folder/paused`` and waits until ``folder/go`` exists: a test that signals it
then signals a worker that is certainly mid-run, at a known iteration."""
import os
import sys
import time
from pathlib import Path

import torch

from ssl_challenge.data.images import PreloadedImages
from ssl_challenge.engine import distributed
from ssl_challenge.engine.train import pretrain
from ssl_challenge.stages.pretraining import build_pretraining_method, pretrain_config

PAUSED, GO = "paused", "go"
PAUSE_LIMIT_S = 300  # a test that never says go must not leave a worker behind for ever


def tiny_images(count: int = 96) -> PreloadedImages:
    generator = torch.Generator().manual_seed(123)
    pixels = torch.randint(0, 128, (count, 3, 16, 16), dtype=torch.uint8, generator=generator)
    pixels[:, :, :4, 2:] = 255  # an upright structure (a bright top bar), so rotations are learnable
    return PreloadedImages(pixels, crop_size=16, crop_padding=2)


def clustered_images(count: int = 96, groups: int = 4) -> PreloadedImages:
    """Noisy copies of ``groups`` random prototypes: a clustering that small perturbations (BatchNorm statistics
    of another batch split) must not change, unlike the clusters of pure noise."""
    generator = torch.Generator().manual_seed(321)
    prototypes = torch.randint(0, 256, (groups, 3, 16, 16), generator=generator).float()
    noise = torch.randn(count, 3, 16, 16, generator=generator) * 12
    pixels = (prototypes[torch.arange(count) % groups] + noise).clamp(0, 255).to(torch.uint8)
    return PreloadedImages(pixels, crop_size=16, crop_padding=0)


# Clustering methods at the scale of tiny_images (96 samples): a few clusters, small necks.
METHOD_OPTIONS = {
    "dc": {"num_clusters": 4, "pca_dims": 8},
    # No neck dropout: its masks are drawn per rank, a difference between 1 and 2 processes unrelated to the
    # gathering this test is about.
    "odc": {"num_clusters": 4, "min_cluster_size": 4, "neck_hidden_dim": 16, "neck_out_dim": 8, "neck_dropout": 0.0},
}


def tiny_config(method: str = "rot", **overrides) -> dict:
    config = {
        "method": method,
        "method_options": METHOD_OPTIONS.get(method, {}),
        "backbone": {"name": "small_resnet", "widths": [8, 8, 8, 8]},
        "epochs": 3,
        "batch_size": 16,
        "optimizer": {"lr": 0.05},
        "schedule": {"warmup_epochs": 1, "milestones": [2]},
        "checkpoint_every": 2,
    }
    config.update(overrides)
    return config


def pause_before_step(method: torch.nn.Module, step: int, folder: Path) -> None:
    """Make ``method``'s ``step``-th training step (1-based, counted in this process) wait: it writes
    ``folder/paused``, then sleeps until ``folder/go`` exists. Signals that arrive meanwhile are handled as at any
    other moment of the run (the training loop's handlers set their flag; SIGKILL ends the process)."""
    training_step, calls = method.training_step, [0]

    def paused_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            (folder / PAUSED).write_text(f"before training step {step}\n")
            deadline = time.monotonic() + PAUSE_LIMIT_S
            while not (folder / GO).exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker: no {folder / GO} within {PAUSE_LIMIT_S} s of pausing")
                time.sleep(0.01)
        return training_step(*args, **kwargs)

    method.training_step = paused_step  # an instance attribute: what the loop calls as method.training_step


if __name__ == "__main__":
    torch.set_num_threads(1)
    method_name = sys.argv[2] if len(sys.argv) > 2 else "rot"
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    batch_size = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    sync_bn = len(sys.argv) > 6 and sys.argv[6] == "sync_bn"
    device = distributed.init_from_environment()  # under torchrun: one process per rank (gloo on the CPU)
    images = clustered_images() if method_name in METHOD_OPTIONS else tiny_images()
    config = pretrain_config(tiny_config(method_name, epochs=epochs, checkpoint_every=1, seed=seed,
                                         batch_size=batch_size, sync_bn=sync_bn))
    method = build_pretraining_method(config, len(images))  # as stages.pretraining.train does
    if os.environ.get("PAUSE_BEFORE_STEP"):
        pause_before_step(method, int(os.environ["PAUSE_BEFORE_STEP"]), Path(os.environ["PAUSE_DIR"]))
    pretrain(config, method, images, sys.argv[1], device, log=lambda m: print(m, flush=True), log_every=1)
    if distributed.is_initialized():
        torch.distributed.destroy_process_group()
