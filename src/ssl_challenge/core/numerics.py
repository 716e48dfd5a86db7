"""Bit-reproducible CPU numerics: the same inputs give the same bytes whatever the thread count (measured: AVX-512
and forced-AVX2 code paths also agree on one machine; across CPU models see the README's "Reproducibility").

What makes torch results depend on the thread count or the CPU (measured with torch 2.14.1 on a 2-core Xeon):

- oneDNN convolutions: the weight gradient's reduction (and, measured, the input gradient's) is split over the
  threads, and every kernel is chosen by the CPU's instruction set (``ONEDNN_MAX_CPU_ISA=AVX2`` changes forward
  and backward). Deterministic mode turns oneDNN off globally (``torch.backends.mkldnn.enabled = False``), pins
  its kernels to AVX2 and sends every CPU ``conv2d`` through :mod:`ssl_challenge.core.chunked_conv`: fixed chunks of
  32 images, each through oneDNN on one thread, their weight gradients added in chunk order. (Until 2026-12-01
  convolutions ran without oneDNN, as im2col + GEMM: deterministic too, at twice the cost of a training step.)
- MKL GEMM splits long inner products over threads and picks its kernels by CPU. ``MKL_CBWR=AVX2,STRICT``
  (Intel's conditional numerical reproducibility, strict mode) fixes both for GEMM on Intel processors. On
  others MKL ignores that branch (its verbose mode says ``CNR:AUTO,STRICT``) and its GEMM depended on the thread
  count (measured on a 2-core AMD EPYC with AVX-512: a linear layer's 4 x 16 weight gradient summed over 64 rows
  differed between 1 and 2 threads): there deterministic mode runs MKL's GEMM on one thread
  (:func:`.threads.keep_mkl_gemm_reproducible`); torch's own threads still split the work around it. Results
  then agree between thread counts on such a CPU, not with an Intel CPU's.
- LAPACK ``eigh`` (PCA, the SVM's basis) differs with the thread count even under ``MKL_CBWR``: callers run it on
  one thread (:func:`.threads.single_thread`).
- ATen's BatchNorm over ``[B, C]`` rows and over channels-last maps splits its statistics over threads:
  ``models.necks.BatchNorm1d`` computes them with per-column reductions instead, and channels-last inputs are
  used only while oneDNN is on.
- Full reductions to one number of tensors over 32768 elements (``x.sum()``) are split over threads; no stage
  reduces such a tensor in a way that feeds back into training.

Deterministic mode is the ``resources.deterministic`` config key (default true). ``job_logging`` exports it as
``SSL_CHALLENGE_DETERMINISTIC`` with the environment pins below, before torch is imported, so torchrun workers
inherit it too. The cost: a CPU training step of the embedded network takes ~1.4x the time of oneDNN's own
threaded path (benchmarks/README.md, ``numerics_cost.py``).

This module does not import torch at import time.
"""
from __future__ import annotations

import os
import platform
import sys

from .threads import DETERMINISTIC_VARIABLE, cpu_field, deterministic_requested, keep_mkl_gemm_reproducible

# Environment pins of deterministic mode, read by the libraries when they load (hence set before torch/faiss are
# imported): MKL's code path and strict (thread-count independent) GEMM; ATen's vector kernels at AVX2 width;
# OpenBLAS (numpy, faiss) kernels of one core type. A value already in the environment wins (setdefault).
DETERMINISTIC_ENVIRONMENT = {
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
RECORDED_VARIABLES = THREAD_VARIABLES + tuple(DETERMINISTIC_ENVIRONMENT) + ("MKL_ENABLE_INSTRUCTIONS",)


def pin_environment(threads: int, deterministic: bool) -> None:
    """Set the thread counts and, in deterministic mode, the pins above (values already set are kept). Call it
    before torch, numpy's BLAS or faiss are loaded: they read these variables once."""
    threads = str(max(1, int(threads)))
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, threads)
    os.environ[DETERMINISTIC_VARIABLE] = "1" if deterministic else "0"
    if deterministic:
        for variable, value in DETERMINISTIC_ENVIRONMENT.items():
            os.environ.setdefault(variable, value)


def configure_torch(threads: int, deterministic: bool | None = None) -> dict:
    """``torch.set_num_threads(threads)`` and, in deterministic mode (``None``: from the environment), oneDNN
    off. Returns :func:`numerics_record`."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    if deterministic is None:
        deterministic = deterministic_requested()
    torch.backends.mkldnn.enabled = not deterministic
    keep_mkl_gemm_reproducible()
    if deterministic:
        from . import chunked_conv

        chunked_conv.install()
    return numerics_record()


def cpu_model() -> str:
    return cpu_field("model name") or platform.processor() or platform.machine()


def numerics_record() -> dict:
    """The facts that decide whether two results can be bit-identical: library versions, the code paths chosen
    (torch's CPU capability, oneDNN on or off, the environment pins), the thread count and the CPU."""
    import numpy

    record = {
        "deterministic": deterministic_requested(),
        "numpy": str(numpy.__version__),
        "environment": {name: os.environ[name] for name in RECORDED_VARIABLES if name in os.environ},
        "cpu": cpu_model(),
    }
    torch = sys.modules.get("torch")  # a job that never loaded torch (concatenation) records no torch facts
    if torch is not None:
        record.update({
            "deterministic": record["deterministic"] and not torch.backends.mkldnn.enabled,
            "torch": str(torch.__version__),  # a plain str: TorchVersion does not load with weights_only
            "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_enabled": bool(torch.backends.mkldnn.enabled),
        })
    faiss = sys.modules.get("faiss")  # recorded where it was used, never imported for this
    if faiss is not None:
        record["faiss"] = str(getattr(faiss, "__version__", "unknown"))
    return record
