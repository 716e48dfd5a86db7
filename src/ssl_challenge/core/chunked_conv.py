"""Deterministic CPU convolutions at oneDNN's speed: fixed chunks of images, one thread per oneDNN call.

oneDNN's convolutions are fast but split their sums by thread count (the weight gradient over the images, the
input gradient over the output channels); without oneDNN torch's convolutions are deterministic but run as
im2col + GEMM with a per-image backward loop, about twice as slow on the embedded network (benchmarks/README.md,
``numerics_cost.py``). Here a batch is cut into chunks of :data:`CHUNK_IMAGES` images, fixed whatever the thread
count, and each chunk goes through oneDNN on one thread: its forward, input gradient and weight gradient are then
the same bytes whoever computes them. With ``n`` torch threads the chunks run on ``n`` Python threads (each with
one intra-op thread; torch releases the GIL), and a chunk's weight and bias gradients are added in chunk order.

In deterministic mode a job's start (``numerics.start_numerics``) installs :func:`conv2d` as
``torch.nn.functional.conv2d``, which ``nn.Conv2d`` (ours, torchvision's ResNet-50 and detector) calls. It takes
the chunked path only while oneDNN is off globally (which is how deterministic mode keeps every other op off
oneDNN), for float32 CPU inputs with numeric padding; anything else goes to torch's own function. oneDNN's
kernels are pinned to AVX2 (``ONEDNN_MAX_CPU_ISA``, :data:`numerics.DETERMINISTIC_ENVIRONMENT`), as MKL's and
ATen's are.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .threads import torch_threads

# Images per oneDNN call. A result depends on it (the order in which the weight gradient's partial sums are added),
# so it is a constant, never derived from the thread count. 32 is as fast as 64 on one thread (0.380 against
# 0.375 s per embedded training step) and splits the embedded batches of 128 into four chunks for the threads.
CHUNK_IMAGES = 32

_torch_conv2d = F.conv2d  # torch's own function, which the chunks call (with oneDNN on for them)
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``torch.nn.functional.conv2d``, through :class:`_ChunkedConv2d` where it applies (module docstring)."""
    if _chunked_applies(input, weight, bias, padding):
        return _ChunkedConv2d.apply(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)
    return _torch_conv2d(input, weight, bias, stride, padding, dilation, groups)


def install() -> None:
    """Make :func:`conv2d` torch's ``conv2d`` for this process (idempotent; ``numerics.start_numerics`` calls it).
    It changes nothing while oneDNN is on, so a later ``configure_torch(deterministic=False)`` gets torch's
    behaviour back without uninstalling."""
    F.conv2d = conv2d


def _chunked_applies(input, weight, bias, padding) -> bool:
    return (not torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available()
            and not torch.is_autocast_enabled("cpu")  # (bf16 autocast runs with oneDNN on: fast mode only)
            and isinstance(input, torch.Tensor) and input.device.type == "cpu" and input.dim() == 4
            and input.dtype == torch.float32 and weight.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32) and not isinstance(padding, str))


def _pair(value) -> list[int]:
    return [int(value)] * 2 if isinstance(value, int) else [int(item) for item in value]


class _ChunkedConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(input, weight)
        ctx.has_bias, ctx.geometry = bias is not None, (stride, padding, dilation, groups)

        def chunk_forward(images):
            with torch.no_grad():  # (grad mode is per thread: on in a pool thread)
                return _torch_conv2d(images, weight, bias, stride, padding, dilation, groups)

        return torch.cat(run_chunks(chunk_forward, input.split(CHUNK_IMAGES)))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        wanted = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None

        def chunk_backward(pair):
            images, grads = pair
            return torch.ops.aten.convolution_backward(grads.contiguous(), images, weight, bias_sizes, stride,
                                                       padding, dilation, False, [0, 0], groups, wanted)

        parts = run_chunks(chunk_backward, list(zip(input.split(CHUNK_IMAGES), grad_output.split(CHUNK_IMAGES))))
        grad_input = torch.cat([part[0] for part in parts]) if wanted[0] else None
        grad_weight = _sum_in_order([part[1] for part in parts]) if wanted[1] else None
        grad_bias = _sum_in_order([part[2] for part in parts]) if wanted[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None, None


def _sum_in_order(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    total = tensors[0].clone()
    for tensor in tensors[1:]:
        total += tensor
    return total


def run_chunks(function: Callable, chunks: Sequence) -> list:
    """``[function(chunk) for chunk in chunks]`` with oneDNN on and one intra-op thread per call: here with one
    torch thread, else on as many Python threads as torch has."""
    threads = torch.get_num_threads()
    if threads == 1:
        with _onednn_on():
            return [function(chunk) for chunk in chunks]
    if len(chunks) == 1:
        with torch_threads(1), _onednn_on():  # (torch_threads restores MKL's setting with oneDNN off)
            return [function(chunks[0])]
    pool = _pool(threads)
    with _onednn_on():
        return list(pool.map(function, chunks))


@contextlib.contextmanager
def _onednn_on() -> Iterator[None]:
    """oneDNN on for the chunks' calls (a global flag: the calling thread waits for the chunks meanwhile)."""
    torch.backends.mkldnn.enabled = True
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = False


def _pool(threads: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` Python threads with one torch thread each, per process (a forked DataLoader worker
    or torchrun child never reuses its parent's threads, which did not survive the fork)."""
    key = (os.getpid(), threads)
    with _pools_lock:
        if key not in _pools:
            pool = ThreadPoolExecutor(threads, thread_name_prefix="chunked-conv", initializer=_one_torch_thread)
            # Start every thread now (each waits for the others); torch_threads then gives torch's process-wide
            # count (which threads started later begin with) back its value: a pool thread's own count stays 1.
            with torch_threads(threads):
                ready = threading.Barrier(threads)
                list(pool.map(lambda _: ready.wait(), range(threads)))
            _pools[key] = pool
        return _pools[key]


def _one_torch_thread() -> None:
    # torch sets a new thread's count from its process-wide value on the thread's first parallel call, which
    # would undo an earlier set_num_threads: let that happen first.
    torch.get_num_threads()
    torch.set_num_threads(1)
