"""A pretraining process for the engine tests: ``python worker.py run_dir [method]`` (killed and resumed by them)."""
import sys

import torch

from ssl_challenge.data.images import PreloadedImages
from ssl_challenge.engine import distributed
from ssl_challenge.engine.train import pretrain


def tiny_images(count: int = 96) -> PreloadedImages:
    generator = torch.Generator().manual_seed(123)
    pixels = torch.randint(0, 128, (count, 3, 16, 16), dtype=torch.uint8, generator=generator)
    pixels[:, :, :4, 2:] = 255  # an upright structure (a bright top bar), so rotations are learnable
    return PreloadedImages(pixels, crop_size=16, crop_padding=2)


def tiny_config(method: str = "rot", **overrides) -> dict:
    config = {
        "method": method,
        "backbone": {"name": "small_resnet", "widths": [8, 8, 8, 8]},
        "epochs": 3,
        "batch_size": 16,
        "optimizer": {"lr": 0.05},
        "schedule": {"warmup_epochs": 1, "milestones": [2]},
        "checkpoint_every": 2,
    }
    config.update(overrides)
    return config


if __name__ == "__main__":
    torch.set_num_threads(1)
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    batch_size = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    device = distributed.init_from_environment()  # under torchrun: one process per rank (gloo on the CPU)
    pretrain(tiny_config(sys.argv[2] if len(sys.argv) > 2 else "rot", epochs=epochs, checkpoint_every=1, seed=seed,
                         batch_size=batch_size),
             tiny_images(), sys.argv[1], device, log=lambda m: print(m, flush=True), log_every=1)
    if distributed.is_initialized():
        torch.distributed.destroy_process_group()
