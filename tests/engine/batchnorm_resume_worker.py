"""One process of the multi-process exact-resume test: ``torchrun --nproc-per-node=2 batchnorm_resume_worker.py
run_dir stop_after [feature_pass]``.

DC without ``sync_bn`` (each rank's BatchNorm statistics follow its own half of every batch) on noise images, whose
k-means labels change with the slightest change of the features. ``stop_after`` > 0 stops the run after that many
iterations with a checkpoint (a job killed there); 0 runs to the end, or resumes from the checkpoint in
``run_dir``. Each rank saves its method's state dict to ``run_dir/rank<r>.pt`` when the run ends.

``feature_pass`` (after the run): rank 1's BatchNorm statistics are moved away from rank 0's, then one feature pass
of the loop runs; each rank saves its statistics after it, the gathered features and, computed alone by rank 0's
network over the whole set, the reference features to ``run_dir/features<r>.pt``.
"""
import sys
from pathlib import Path

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from ssl_challenge.engine import distributed
from ssl_challenge.engine.inference import frozen_outputs
from ssl_challenge.engine.train import feature_extractor, pretrain
from ssl_challenge.stages.pretraining import build_pretraining_method, pretrain_config

from worker import tiny_config, tiny_images  # this folder is sys.path[0] when run as a script

EPOCHS = 2
BATCH_SIZE = 32  # 16 per rank; 96 samples: 3 iterations per epoch
CHECKPOINT_EVERY = 1000  # only the epochs' checkpoints: a stop mid-epoch writes one the whole run does not


def batchnorm_statistics(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in module.named_buffers()
            if isinstance(module.get_submodule(name.rpartition(".")[0]), _BatchNorm)}


def feature_pass(method: torch.nn.Module, images, out: Path) -> None:
    for name, buffer in batchnorm_statistics(method).items():
        if distributed.rank() == 1 and buffer.is_floating_point():
            method.get_buffer(name).add_(1.0)  # rank 1's statistics no longer rank 0's
    reference = frozen_outputs(method, method.backbone.pooled, images, 64, torch.device("cpu"))
    features = feature_extractor(images, len(images), 64, torch.device("cpu"), method)(method.backbone.pooled)
    torch.save({"statistics": batchnorm_statistics(method), "features": features, "reference": reference},
               out / f"features{distributed.rank()}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, stop_after = Path(sys.argv[1]), int(sys.argv[2])
    device = distributed.init_from_environment()
    images = tiny_images()
    config = pretrain_config(tiny_config("dc", epochs=EPOCHS, batch_size=BATCH_SIZE,
                                         checkpoint_every=CHECKPOINT_EVERY))
    method = build_pretraining_method(config, len(images))
    pretrain(config, method, images, run_dir, device, log=lambda message: None, stop_after_iterations=stop_after or None)
    torch.save(method.state_dict(), run_dir / f"rank{distributed.rank()}.pt")
    if "feature_pass" in sys.argv[3:]:
        feature_pass(method, images, run_dir)
    torch.distributed.destroy_process_group()
