"""A job's numerics: deterministic mode (the ``resources.deterministic`` config key, default true) and the record
of what was in force (:func:`numerics_record`, stored with every result).

On the CPU, deterministic mode makes the same inputs give the same bytes whatever the thread count. It turns oneDNN
off and sends every CPU ``conv2d`` through :mod:`.chunked_conv` (fixed chunks, installed by :func:`start_numerics`,
which every job calls where it starts); pins MKL's GEMM and ATen's kernels to one code path (the environment pins
below, set by ``job_logging`` before torch loads, so torchrun workers inherit them) and keeps MKL's GEMM on one
thread where its strict mode does not apply (:mod:`.threads`); eigendecompositions run on one thread
(:func:`.threads.single_thread`) and ``models.necks.BatchNorm1d`` reduces column by column. On a GPU the same key
sets cuDNN's deterministic mode, deterministic algorithms in warn-only mode and cuBLAS's workspace variable
(:func:`configure_cuda`); the record then says what was in force, with every operation torch warned about.

What each of these fixes, the measurements behind them and their cost are in docs/reproducibility.md and
benchmarks/README.md (``numerics_cost.py``). This module does not import torch at import time.
"""
from __future__ import annotations

import os
import platform
import re
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
# cuBLAS's deterministic workspace (NVIDIA's documented setting; torch's deterministic mode requires it from CUDA
# 10.2 on). Set with the CPU pins, before torch loads, so every process (torchrun's workers too) has it before its
# first CUDA call; recorded only in a GPU run's ``cuda`` record, so CPU records stay as they were.
CUDA_DETERMINISTIC_ENVIRONMENT = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
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
        for variable, value in (DETERMINISTIC_ENVIRONMENT | CUDA_DETERMINISTIC_ENVIRONMENT).items():
            os.environ.setdefault(variable, value)


def start_numerics(threads: int, deterministic: bool | None = None) -> dict:
    """The numerics of a job (or torchrun worker) that computes with torch, set once where it starts, before any
    model is built: :func:`configure_torch`, and in deterministic mode (``None``: from the environment) the
    chunked convolutions installed as torch's ``conv2d`` (:func:`.chunked_conv.install`). Returns
    :func:`numerics_record`."""
    if deterministic is None:
        deterministic = deterministic_requested()
    if deterministic:
        from . import chunked_conv  # imports torch: not at this module's import

        chunked_conv.install()
    return configure_torch(threads, deterministic)


def configure_torch(threads: int, deterministic: bool | None = None) -> dict:
    """``torch.set_num_threads(threads)`` and, in deterministic mode (``None``: from the environment), oneDNN
    off and MKL's GEMM kept reproducible. Torch's flags only: a job starts with :func:`start_numerics`, which
    also installs the deterministic convolutions. Returns :func:`numerics_record`."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    if deterministic is None:
        deterministic = deterministic_requested()
    torch.backends.mkldnn.enabled = not deterministic
    keep_mkl_gemm_reproducible()
    return numerics_record()


NONDETERMINISTIC_WARNING = re.compile(r"^(?P<operation>.+?) does not have a deterministic implementation")
_cuda_device: str | None = None  # the CUDA device configure_cuda set up in this process; None: none
_nondeterministic_operations: list[str] = []  # operations torch warned about, in the order first warned


def configure_cuda(device, deterministic: bool | None = None) -> dict:
    """On a CUDA ``device``, deterministic mode (``None``: from the environment) as GPU numerics need it: cuDNN's
    deterministic algorithms with its autotuner (benchmark) off, ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` and cuBLAS's workspace variable (also pinned by :func:`pin_environment`, before any CUDA
    call). Warn-only: an operation without a deterministic CUDA implementation is warned about and listed in the
    record (``nondeterministic_operations``), never stops a job of several days. Outside deterministic mode the
    flags are turned off again (benchmark left as it is). Nothing is changed on any other device. Call it where the
    device is chosen, before any computation on it. Returns :func:`numerics_record`."""
    import torch

    global _cuda_device
    if torch.device(device).type != "cuda":
        return numerics_record()
    if deterministic is None:
        deterministic = deterministic_requested()
    _cuda_device = str(device)
    if deterministic:
        for variable, value in CUDA_DETERMINISTIC_ENVIRONMENT.items():
            os.environ.setdefault(variable, value)
        torch.backends.cudnn.benchmark = False
        _record_nondeterministic_warnings()
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return numerics_record()


def _record_nondeterministic_warnings() -> None:
    """Wrap ``warnings.showwarning`` (once) so that torch's warn-only alerts are listed for :func:`cuda_record`;
    each is still shown (logged) as before. A filter in front makes them shown once per place of call even where
    the user's filters ignore warnings. Not seen: alerts inside a ``warnings.catch_warnings(record=True)`` block,
    which takes the display over (no stage runs CUDA work inside one)."""
    import warnings

    warnings.filterwarnings("default", message=NONDETERMINISTIC_WARNING.pattern.lstrip("^"))
    shown = warnings.showwarning
    if getattr(shown, "records_nondeterministic_operations", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        match = NONDETERMINISTIC_WARNING.match(str(message))
        if match and match["operation"] not in _nondeterministic_operations:
            _nondeterministic_operations.append(match["operation"])
        shown(message, category, filename, lineno, file, line)

    showwarning.records_nondeterministic_operations = True
    warnings.showwarning = showwarning


def cuda_record(torch) -> dict:
    """What was in force on the CUDA device :func:`configure_cuda` set up: cuDNN's flags, torch's deterministic
    algorithms, cuBLAS's workspace variable and the operations warned about as not deterministic."""
    return {
        "device": _cuda_device,
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_algorithms_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "nondeterministic_operations": list(_nondeterministic_operations),
    }


def cuda_deterministic(cuda: dict) -> bool:
    """Whether a :func:`cuda_record` describes deterministic GPU settings with no operation warned about (whether
    GPU reruns then repeat bit for bit has not been measured here)."""
    return (cuda["cudnn_deterministic"] and not cuda["cudnn_benchmark"] and cuda["deterministic_algorithms"]
            and cuda["cublas_workspace_config"] in (":4096:8", ":16:8") and not cuda["nondeterministic_operations"])


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
        if _cuda_device is not None:  # a GPU run: what was in force there (a CPU run's record is unchanged)
            record["cuda"] = cuda_record(torch)
            record["deterministic"] = record["deterministic"] and cuda_deterministic(record["cuda"])
    faiss = sys.modules.get("faiss")  # recorded where it was used, never imported for this
    if faiss is not None:
        record["faiss"] = str(getattr(faiss, "__version__", "unknown"))
    return record
