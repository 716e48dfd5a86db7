"""One process of the synchronised-BatchNorm test: ``torchrun --nproc-per-node=W sync_bn_worker.py out_dir``.

Every rank takes its 1/W slice of one fixed batch through a small network whose BatchNorms (2d, and the
project's BatchNorm1d) are converted by ``engine.sync_batchnorm``, wrapped in DDP as the loop does; the loss is the
mean over the rank's rows. Each rank saves its outputs, its input rows' gradients, the parameters' (DDP-averaged)
gradients and the BatchNorms' running statistics to ``out_dir/rank<r>.pt``. Run without torchrun, it is the
one-process reference holding the whole batch.
"""
import sys
from pathlib import Path

import torch
from torch import nn

from ssl_challenge.engine import distributed
from ssl_challenge.engine.sync_batchnorm import convert_sync_batchnorm
from ssl_challenge.models.necks import BatchNorm1d

BATCH = 8


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5),
                         BatchNorm1d(5))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, 8, 8, generator=generator) * 3 + 1
    targets = torch.randn(BATCH, 5, generator=generator)
    return images, targets


def run(out_dir: Path) -> None:
    device = distributed.init_from_environment()
    rank, world = distributed.rank(), distributed.world_size()
    net = network()
    model = net
    if world > 1:
        net = convert_sync_batchnorm(net, device)
        model = torch.nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)
    images, targets = batch()
    rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    local = images[rows].clone().requires_grad_(True)
    outputs = model(local)
    loss = (outputs - targets[rows]).square().sum(1).mean()
    loss.backward()
    torch.save({"outputs": outputs.detach(), "input_grad": local.grad,
                "grads": {name: p.grad for name, p in net.named_parameters()},
                "buffers": {name: b for name, b in net.named_buffers()}}, out_dir / f"rank{rank}.pt")
    if distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]))
