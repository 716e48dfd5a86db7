"""Batches of an image source through torch's ``DataLoader``: worker processes, prefetching, pinned memory.

A batch is asked for by what determines it (:class:`BatchRequest`: the sample indices, augmented or not, and its
random state), never by a running generator, so the process that makes it does not matter: with 0, 1 or 8
workers the same request gives the same tensor, and a run resumed at batch k asks for exactly the batches that
an uninterrupted run would have asked for.

The random state of an augmented batch is one of two kinds:

- per sample (sources with ``load_batch_seeded``: images decoded from files): sample slot ``s`` of epoch ``e``
  (its position in the epoch's order) gets a generator seeded from ``(seed, e, s)`` (:func:`sample_seed`), so
  its crop does not depend on the worker, the batch size or the number of processes either;
- per batch (preloaded tensors, augmented as whole batches with tensor operations): one generator seeded by the
  caller (the engine: from the seed, the epoch and the batch position, as before this module existed), so the
  embedded default's training batches are unchanged.

With 0 workers the batches are made in the calling process when asked for (no prefetching), which is what the
2-core embedded default wants: its preloaded batches take about a millisecond each.

Other kinds of batch (the detector's images and boxes, ``detection.data``) come through the same loader with
their own request type and ``make`` function; the random draws stay out of the workers either way (the
DataLoader gets its own generator, so the calling process's global torch RNG does not depend on the workers).
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..core.config import ConfigError

PREFETCH_BATCHES = 2  # per worker: DataLoader's prefetch_factor


def sample_seed(seed: int, epoch: int, slot: int) -> int:
    """The 63-bit seed of sample slot ``slot`` of epoch ``epoch`` (stable across processes and versions)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(slot), 3]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class BatchRequest:
    """One batch: ``source.load_batch(indices, augment, ...)`` with a random state that does not depend on who
    makes it. ``slot_seed`` (seed, epoch, first slot): per-sample generators (sample k: :func:`sample_seed` of
    slot first + k) for sources that have ``load_batch_seeded``; otherwise ``batch_seed`` seeds one generator for
    the whole batch. ``keep`` (start, stop): rows of the made batch to return (one process's slice of a global
    batch drawn whole)."""

    indices: torch.Tensor
    augment: bool = False
    batch_seed: int = 0
    slot_seed: tuple[int, int, int] | None = None
    keep: tuple[int, int] | None = None


def make_batch(source, request: BatchRequest) -> torch.Tensor:
    """The normalised float batch of ``request`` from ``source`` (an ``ImageSource``), in this process."""
    if not request.augment:
        batch = source.load_batch(request.indices, False, torch.Generator())
    elif request.slot_seed is not None and hasattr(source, "load_batch_seeded"):
        seed, epoch, first = request.slot_seed
        seeds = [sample_seed(seed, epoch, first + offset) for offset in range(len(request.indices))]
        batch = source.load_batch_seeded(request.indices, seeds)
    else:
        batch = source.load_batch(request.indices, True, torch.Generator().manual_seed(request.batch_seed))
    if request.keep is not None:
        batch = batch[request.keep[0] : request.keep[1]]
    return batch


class _RequestedBatches(torch.utils.data.Dataset):
    """Item i is ``make(source, request i)`` (the DataLoader runs with ``batch_size=None``: no collation)."""

    def __init__(self, source, requests: Sequence[Any], make: Callable[[Any, Any], Any] = make_batch):
        self.source, self.requests, self.make = source, list(requests), make

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, item: int):
        return self.make(self.source, self.requests[item])


def _start_worker(_worker_id: int) -> None:
    # SLURM's SIGTERM/SIGUSR1 reach the whole process group: the main process checkpoints and closes the loader,
    # which ends its workers; a worker killed first would make the main process fail instead.
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)
    dataset = torch.utils.data.get_worker_info().dataset
    if hasattr(dataset.source, "threads"):  # the workers are the parallelism: decode one image at a time
        dataset.source.threads = 1


def check_workers(workers: int, where: str = "resources.data_workers") -> int:
    """``workers`` as an int >= 0, or a ConfigError naming the config key."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"config key {where}: expected an integer >= 0 (0 makes the batches in the training "
                          f"process), got {workers!r}")
    return int(workers)


def load_batches(source, requests: Sequence[Any], workers: int = 0, device: torch.device | str = "cpu",
                 make: Callable[[Any, Any], Any] = make_batch) -> Iterator[Any]:
    """The batches ``make(source, request)`` of ``requests`` in order (default: :func:`make_batch` of
    :class:`BatchRequest`), made by ``workers`` processes (0: here, when asked for) with :data:`PREFETCH_BATCHES`
    per worker made ahead, in pinned memory when ``device`` is CUDA (tensors, also inside lists, tuples and
    dicts). The caller moves them to the device (``non_blocking=True`` overlaps the copy when pinned). ``make``
    must be a module-level function (workers started by spawn or forkserver receive it pickled)."""
    workers = check_workers(workers)
    device = torch.device(device)
    requests = list(requests)
    if not requests:
        return iter(())
    stored = getattr(source, "images", None)
    if isinstance(stored, torch.Tensor) and stored.device.type != "cpu":
        workers = 0  # images already on the accelerator: batches are made there, no process may fork with them
    if workers == 0:
        return (make(source, request) for request in requests)
    loader = torch.utils.data.DataLoader(
        _RequestedBatches(source, requests, make), batch_size=None, shuffle=False,
        num_workers=min(workers, len(requests)), pin_memory=device.type == "cuda", prefetch_factor=PREFETCH_BATCHES,
        worker_init_fn=_start_worker, generator=torch.Generator().manual_seed(0),  # not the global RNG
    )
    return iter(loader)


def index_batches(num_samples: int, batch_size: int, indices: torch.Tensor | None = None) -> list[BatchRequest]:
    """Un-augmented requests over ``indices`` (default: every sample, in index order), ``batch_size`` at a time."""
    indices = torch.arange(num_samples) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    return [BatchRequest(indices[start : start + batch_size]) for start in range(0, len(indices), batch_size)]
