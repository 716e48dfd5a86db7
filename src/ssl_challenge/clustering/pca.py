"""PCA with whitening, then L2 normalisation: DC's preprocessing of the features before k-means.

The reference applies faiss's ``PCAMatrix(D, 256, eigen_power=-0.5)`` and normalises the rows. Here the
covariance is accumulated in float64 over row chunks (a 1.28M x 2048 feature matrix is never copied to float64)
and diagonalised with ``torch.linalg.eigh``; the sign of every component is fixed (its largest-magnitude
coefficient is positive) so the result does not depend on the eigensolver's arbitrary signs. DC's
preprocessing runs on a GPU when torch sees one (:func:`compute_device`), whatever device the features live on
(chunks travel to it), and on the CPU otherwise, with unchanged results there.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.threads import single_thread

CHUNK_ROWS = 65536
# Eigenvalues are floored at this fraction of the largest, so directions without variance (fewer points than
# dimensions, duplicated features) are not divided by zero.
RELATIVE_EIGENVALUE_FLOOR = 1e-10


@dataclass(frozen=True)
class PCA:
    mean: torch.Tensor  # Tensor[D] float64
    components: torch.Tensor  # Tensor[d, D] float64: the d leading eigenvectors, by decreasing eigenvalue
    eigenvalues: torch.Tensor  # Tensor[d] float64: the variances along them (covariance divided by N)

    def transform(self, features: torch.Tensor, eigen_power: float = -0.5,
                  device: torch.device | None = None) -> torch.Tensor:
        """``Tensor[N, D]`` -> ``Tensor[N, d]`` float32 on the features' device: centred, projected, each dimension
        scaled by ``eigenvalue ** eigen_power`` (-0.5: whitened, unit variance on the fitted data; 0: plain PCA).
        The products run on ``device`` (default: the features')."""
        device = features.device if device is None else device
        floor = self.eigenvalues.max() * RELATIVE_EIGENVALUE_FLOOR
        scales = self.eigenvalues.clamp_min(floor).pow(eigen_power)
        projection = (self.components * scales[:, None]).T  # [D, d]
        offset = self.mean @ projection  # [d]
        output = torch.empty(features.shape[0], projection.shape[1], dtype=torch.float32, device=features.device)
        projection, offset = projection.to(device), offset.to(device)
        for start in range(0, features.shape[0], CHUNK_ROWS):
            chunk = features[start : start + CHUNK_ROWS].to(device).double()
            output[start : start + CHUNK_ROWS] = (chunk @ projection - offset).to(features.device)
        return output


def compute_device(features: torch.Tensor) -> torch.device:
    """Where DC's PCA runs: the features' GPU, else torch's current GPU when there is one, else the CPU."""
    if features.device.type == "cuda" or not torch.cuda.is_available():
        return features.device
    return torch.device("cuda", torch.cuda.current_device())


def fit_pca(features: torch.Tensor, dims: int, device: torch.device | None = None) -> PCA:
    """The ``dims`` principal directions of ``features`` (``Tensor[N, D]``); ``1 <= dims <= D`` is required.
    Accumulated on ``device`` (default: the features'), where the result's tensors live."""
    if features.dim() != 2:
        raise ValueError(f"fit_pca: expected features [N, D], got shape {tuple(features.shape)}")
    count, dim = features.shape
    if not 1 <= dims <= dim or count < 1:
        raise ValueError(f"fit_pca: need 1 <= dims ({dims}) <= feature dimension ({dim}) and at least one row")
    device = features.device if device is None else device
    total = torch.zeros(dim, dtype=torch.float64, device=device)
    second_moment = torch.zeros(dim, dim, dtype=torch.float64, device=device)
    for start in range(0, count, CHUNK_ROWS):
        chunk = features[start : start + CHUNK_ROWS].to(device).double()
        total += chunk.sum(0)
        second_moment += chunk.T @ chunk
    mean = total / count
    covariance = second_moment / count - torch.outer(mean, mean)
    with single_thread():  # LAPACK's eigh gives other bits with other thread counts (see ssl_challenge.core.numerics)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues = eigenvalues.flip(0)[:dims].clamp_min(0.0)
    components = eigenvectors.flip(1)[:, :dims].T.contiguous()  # [dims, D]
    largest = components.abs().argmax(dim=1, keepdim=True)
    components *= components.gather(1, largest).sign()
    return PCA(mean=mean, components=components, eigenvalues=eigenvalues)


def pca_whiten_normalise(features: torch.Tensor, dims: int) -> torch.Tensor:
    """DC's preprocessing: ``Tensor[N, D]`` -> ``Tensor[N, min(dims, N, D)]`` float32, PCA-whitened (eigenvalue
    power -0.5) and L2-normalised row by row. Deterministic for given features."""
    dims = min(dims, features.shape[0], features.shape[1])
    device = compute_device(features)
    whitened = fit_pca(features, dims, device).transform(features, eigen_power=-0.5, device=device)
    return F.normalize(whitened, dim=1)
