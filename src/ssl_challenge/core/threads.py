"""Thread counts that keep results reproducible: torch's intra-op count set and restored around a block, and MKL's
GEMM kept on one thread where its strict reproducible mode does not apply (the reasons are in :mod:`.numerics`).
Shared by :mod:`.numerics` and :mod:`.chunked_conv`; does not import torch at import time."""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Iterator

DETERMINISTIC_VARIABLE = "SSL_CHALLENGE_DETERMINISTIC"


def deterministic_requested() -> bool:
    """Whether this process runs in deterministic mode (``SSL_CHALLENGE_DETERMINISTIC``, default on)."""
    value = os.environ.get(DETERMINISTIC_VARIABLE, "1").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"environment variable {DETERMINISTIC_VARIABLE}={value!r}: expected 1 or 0 (set from the "
                         "config key resources.deterministic)")
    return value in ("1", "true", "yes")


def keep_mkl_gemm_reproducible() -> None:
    """After ``torch.set_num_threads``: in deterministic mode on a CPU that is not Intel's (where MKL ignores
    ``MKL_CBWR``'s branch), MKL's GEMM back on one thread in the calling thread. On Intel CPUs strict CNR already
    makes GEMM thread-count independent: nothing changes there."""
    import torch

    if deterministic_requested() and not torch.backends.mkldnn.enabled and not mkl_honours_cnr_branch():
        mkl_gemm_on_one_thread()


@functools.lru_cache(maxsize=None)
def mkl_honours_cnr_branch() -> bool:
    """Whether MKL takes ``MKL_CBWR``'s AVX2 branch here: on Intel's CPUs (and where the vendor is unknown)."""
    return cpu_field("vendor_id") in ("GenuineIntel", "")


def mkl_gemm_on_one_thread() -> bool:
    """MKL's own threading off in the calling thread (``MKL_Set_Num_Threads_Local(1)``, which wins over the count
    that ``torch.set_num_threads`` gives MKL): a GEMM then sums in the same order whatever the thread count, also
    where MKL ignores ``MKL_CBWR``'s branch (module docstring). torch's threads still split the work around the
    GEMMs (im2col convolution runs one GEMM per image). Returns False where torch's MKL does not export the call."""
    import ctypes

    import torch

    torch.get_num_threads()  # torch sets MKL's count once per thread, lazily: let it happen before, not after
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        library.MKL_Set_Num_Threads_Local(ctypes.c_int(1))  # the C interface (by value)
    except (OSError, AttributeError):
        return False
    return True


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (BLAS included), restoring the previous count afterwards;
    each change of the count keeps MKL's GEMM reproducible (:func:`keep_mkl_gemm_reproducible`)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))  # which also gives MKL that count in this thread
    keep_mkl_gemm_reproducible()
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        keep_mkl_gemm_reproducible()


def single_thread() -> contextlib.AbstractContextManager[None]:
    """Run a block (an eigendecomposition) with one torch thread, restoring the count afterwards."""
    return torch_threads(1)


def cpu_field(name: str) -> str:
    """A field of /proc/cpuinfo's first processor (``model name``, ``vendor_id``); "" where there is none."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
