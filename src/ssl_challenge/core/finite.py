"""NaN and infinity are refused wherever numbers enter a stage: a diverged model must fail where it is read, named,
not three stages later as a k-means error or a probe that quietly reports chance accuracy.

Torch-free (tensors are handled through their own methods), so the workflow's helpers may import it.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

CHUNK_ELEMENTS = 1 << 24  # rows are checked in blocks of about this many values: bounded extra memory


class NonFiniteError(ValueError):
    """Values that must be finite hold NaN or infinity; the message names the file, model or array."""


def count_non_finite(array: np.ndarray) -> int:
    """The number of NaN/inf entries of a numeric array (0 for integer arrays)."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact) or array.size == 0:
        return 0
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    step = max(1, CHUNK_ELEMENTS // max(1, rows.shape[1]))
    total = 0
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        total += block.size - int(np.count_nonzero(np.isfinite(block)))
    return total


def require_finite(array: np.ndarray, what: str, remedy: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``what`` when ``array`` holds NaN or infinity."""
    bad = count_non_finite(array)
    if bad:
        array = np.asarray(array)
        kinds = "NaN" if np.isnan(array).any() else "infinite values"
        raise NonFiniteError(f"{what}: {bad} of {array.size} values are NaN or infinite ({kinds} present)"
                             + (f"; {remedy}" if remedy else ""))


def non_finite_tensors(tensors: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors of a state dict that hold NaN or infinity."""
    return [name for name, tensor in tensors.items()
            if hasattr(tensor, "is_floating_point") and tensor.is_floating_point()
            and not bool(tensor.isfinite().all())]
