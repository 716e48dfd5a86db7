"""The squared-hinge linear SVM, solved exactly: pure maths, no protocol (``svm.py`` has the VOC07 protocol).

Every SVM of the evaluation tracks solves the same strictly convex primal as scikit-learn's ``LinearSVC`` with the
reference settings (squared hinge, L2 penalty, the bias a regularised constant feature with intercept_scaling 1,
class weights positive 2 / negative 1)::

    min_w  0.5 * ||w||^2 + sum_i C * s_i * max(0, 1 - y_i * w . [x_i, 1])^2,   s_i = 2 if y_i = +1 else 1

Two solvers:

- ``"liblinear"``: ``LinearSVC`` itself (:func:`fit_liblinear`: dual coordinate descent, tol 1e-4, max_iter 2000,
  ``random_state=0`` so that runs repeat exactly). The ground truth.
- ``"newton"``: an exact batched solver (:func:`solve_squared_hinge`). The rows are rotated once into an
  orthogonal basis ``Z`` with ``Z Z^T = [X, 1][X, 1]^T`` (:func:`spectral_basis`, an eigendecomposition of the
  Gram matrix), in which every problem, whatever its rows, costs and class, is the same primal. All problems are
  solved together by Newton's method with Jacobi-preconditioned conjugate gradients and an exact line search, so
  that the work is matrix products over all of them at once (BLAS-3, or the GPU). Since the Hessian is at least
  the identity, a gradient norm of ``g`` bounds the distance to the unique optimum by ``g``; iterations stop at a
  relative gradient norm of 1e-8. :func:`scores_from_dual` turns a solution into decision values of new rows.

The features are first L2-normalised row by row (:func:`l2_normalise_rows`, the reference's ``f / (||f|| + 1e-5)``;
the concatenated models use it too).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

CLASS_WEIGHT = {1: 2.0, -1: 1.0}
MIN_CG_BATCH = 64  # below this many columns, conjugate gradients stop paying off against direct solves
LIBLINEAR_SETTINGS = dict(penalty="l2", loss="squared_hinge", dual=True, tol=1e-4, max_iter=2000,
                          intercept_scaling=1.0, class_weight=CLASS_WEIGHT, random_state=0)
NORM_EPSILON = 1e-5  # the reference's f / (||f|| + 1e-5): all-zero rows (dead ReLU features) stay zero


def l2_normalise_rows(features: np.ndarray) -> np.ndarray:
    """float64 copy of ``features`` [N, D] with each row divided by (its L2 norm + 1e-5), as the reference."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"SVM features must be a 2-d array [images, dims], got shape {features.shape}")
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + NORM_EPSILON)


def with_bias(features: np.ndarray, device) -> "torch.Tensor":
    """``[N, D]`` float64 -> ``Tensor[N, D + 1]`` on ``device``: the rows with the constant bias feature 1."""
    import torch

    return torch.from_numpy(np.hstack([features, np.ones((features.shape[0], 1))])).to(device)


# ------------------------------------------------------------------------------------------------ liblinear
def fit_liblinear(features: np.ndarray, targets: np.ndarray, cost: float):
    """``LinearSVC`` with the reference settings; returns (model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    model = LinearSVC(C=cost, **LIBLINEAR_SETTINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(features, targets)
    return model, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


# ------------------------------------------------------------------------------------------------ exact Newton
@dataclass
class SquaredHingeSolution:
    """Batched solution: ``coefficients`` [R, M] in the basis, ``margins`` [N, M] = Z @ coefficients (the decision
    values of every row, held-out rows included), ``dual_coefficients`` [N, M] = 2 * weight * max(0, 1 - y f)."""

    coefficients: "torch.Tensor"
    margins: "torch.Tensor"
    dual_coefficients: "torch.Tensor"
    stats: dict
    gram: "torch.Tensor | None" = None  # Z Z^T, when it was computed (for reuse)


def spectral_basis(x_bias: "torch.Tensor", relative_cutoff: float = 1e-13, return_gram: bool = False):
    """Rows of ``x_bias`` [N, D] rotated into orthogonal coordinates: Z [N, R] with Z Z^T = x_bias x_bias^T and
    Z^T Z diagonal. Directions with eigenvalue below ``relative_cutoff`` x the largest carry no data and are
    dropped (R <= min(N, D)). Uses the smaller of the two Gram matrices. With ``return_gram``, returns
    (Z, the row Gram matrix [N, N] when it was computed on the way, else None)."""
    import torch

    rows, dims = x_bias.shape
    if dims <= rows:
        eigenvalues, vectors = torch.linalg.eigh(x_bias.T @ x_bias)
        keep = eigenvalues > relative_cutoff * eigenvalues[-1].clamp_min(1e-300)
        basis, gram = x_bias @ vectors[:, keep], None
    else:
        gram = x_bias @ x_bias.T
        eigenvalues, vectors = torch.linalg.eigh(gram)
        keep = eigenvalues > relative_cutoff * eigenvalues[-1].clamp_min(1e-300)
        basis = vectors[:, keep] * eigenvalues[keep].sqrt()
    return (basis, gram) if return_gram else basis


def solve_squared_hinge(basis: "torch.Tensor", targets: "torch.Tensor", weights: "torch.Tensor",
                        gram: "torch.Tensor | None" = None, tol: float = 1e-8, max_newton: int = 100,
                        max_cg: int = 1000, on_step: Callable[[int, int, int], None] | None = None
                        ) -> SquaredHingeSolution:
    """Solve M independent problems  min_u 0.5 ||u||^2 + sum_i weights[i, m] * max(0, 1 - targets[i, m] z_i . u)^2.

    ``basis`` Z [N, R], ``targets`` [N, M] (+1/-1), ``weights`` [N, M] (C * class weight; 0 leaves a row out),
    ``gram`` Z Z^T [N, N] (computed when needed and not given). Finite Newton method: with A the rows inside the
    margin, the Newton point minimises the quadratic 0.5 ||u||^2 + sum_A w_i (y_i - z_i . u)^2. It is found
    either directly in row space, u = Z_A^T b with (K_AA + diag(1 / 2w_A)) b = y_A (a Cholesky of |A| x |A|, cheap
    when few rows are inside the margin: large costs), or by conjugate gradients on H = I + 2 Z_A^T W_A Z_A
    (Jacobi preconditioner, good because Z^T Z is diagonal: small costs). The step along the Newton direction is
    exact (the objective is piecewise quadratic on a line). Converged columns leave the batch. ``on_step(steps,
    converged, M)`` is called before each Newton step and at the end (progress for long solves).
    """
    import torch

    num_rows, rank = basis.shape
    num_columns = targets.shape[1]
    basis_squared = basis * basis
    # a direct solve of size |A| costs about as much as 10 CG iterations over all rows
    direct_limit = int((10 * 4 * num_rows * rank * 3) ** (1 / 3))
    coefficients = torch.zeros(rank, num_columns, dtype=basis.dtype, device=basis.device)
    margins = torch.zeros(num_rows, num_columns, dtype=basis.dtype, device=basis.device)
    initial_gradient = torch.linalg.vector_norm(2 * basis.T @ (weights * targets), dim=0)
    columns = torch.nonzero(initial_gradient > 0).flatten()
    stats = {"newton_steps": 0, "cg_steps": 0, "direct_solves": 0, "not_converged": 0}
    for _ in range(max_newton):
        if columns.numel() == 0:
            break
        u, f, y, w = coefficients[:, columns], margins[:, columns], targets[:, columns], weights[:, columns]
        slack = (1 - y * f).clamp_min(0)
        active_weight = w * (slack > 0)
        gradient = u - 2 * basis.T @ (active_weight * y * slack)
        relative = torch.linalg.vector_norm(gradient, dim=0) / initial_gradient[columns]
        going = relative > tol
        if not going.all():
            columns, u, f, y, w = columns[going], u[:, going], f[:, going], y[:, going], w[:, going]
            active_weight, gradient, relative = active_weight[:, going], gradient[:, going], relative[going]
            if columns.numel() == 0:
                break
        if on_step is not None:
            on_step(stats["newton_steps"], num_columns - columns.numel(), num_columns)
        stats["newton_steps"] += 1
        direction = torch.empty_like(u)
        direct = (active_weight > 0).sum(0) <= direct_limit
        if (~direct).sum() < MIN_CG_BATCH:  # a few columns keep CG memory-bound: factorising is cheaper
            direct[:] = True
        if direct.any():
            if gram is None:
                gram = basis @ basis.T
            where = torch.nonzero(direct).flatten()
            direction[:, where] = _direct_newton_points(basis, gram, active_weight[:, where], y[:, where]) \
                - u[:, where]
            stats["direct_solves"] += int(where.numel())
        if not direct.all():
            where = torch.nonzero(~direct).flatten()
            preconditioner = 1 / (1 + 2 * basis_squared.T @ active_weight[:, where])
            forcing = relative[where].clamp(max=0.1)
            direction[:, where], cg_steps = _preconditioned_cg(basis, active_weight[:, where], -gradient[:, where],
                                                               preconditioner, forcing, max_cg)
            stats["cg_steps"] += cg_steps
        direction_margins = basis @ direction
        step = _exact_line_search(u, direction, f, direction_margins, y, w)
        coefficients[:, columns] = u + step * direction
        margins[:, columns] = f + step * direction_margins
    stats["not_converged"] = int(columns.numel())
    if on_step is not None:
        on_step(stats["newton_steps"], num_columns - columns.numel(), num_columns)
    dual = 2 * weights * (1 - targets * margins).clamp_min(0)
    return SquaredHingeSolution(coefficients, margins, dual, stats, gram)


def _direct_newton_points(basis, gram, active_weight, targets):
    """Per column, the minimiser of the quadratic on its active rows: Z_A^T b, (K_AA + diag(1/2w_A)) b = y_A."""
    import torch

    row_coefficients = torch.zeros_like(active_weight)
    for column in range(active_weight.shape[1]):
        rows = torch.nonzero(active_weight[:, column] > 0).flatten()
        if rows.numel() == 0:
            continue
        system = gram[rows][:, rows]
        system.diagonal().add_(0.5 / active_weight[rows, column])
        factor = torch.linalg.cholesky(system)
        row_coefficients[rows, column] = torch.cholesky_solve(targets[rows, column, None], factor)[:, 0]
    return basis.T @ row_coefficients


def _preconditioned_cg(basis, active_weight, rhs, preconditioner, rtol, max_iter):
    """Solve (I + 2 Z^T diag(active_weight) Z) x = rhs column-wise; columns leave once their residual norm is
    below rtol x ||rhs||. Returns (x, iterations)."""
    import torch

    solution = torch.zeros_like(rhs)
    columns = torch.arange(rhs.shape[1], device=rhs.device)
    threshold = rtol * torch.linalg.vector_norm(rhs, dim=0)
    residual = rhs.clone()
    preconditioned = preconditioner * residual
    search = preconditioned.clone()
    residual_dot = (residual * preconditioned).sum(0)
    iteration = 0
    for iteration in range(1, max_iter + 1):
        product = search + 2 * basis.T @ (active_weight[:, columns] * (basis @ search))
        step = residual_dot / (search * product).sum(0)
        solution[:, columns] += step * search
        residual -= step * product
        going = torch.linalg.vector_norm(residual, dim=0) > threshold[columns]
        if not going.any():
            break
        if not going.all():
            columns, residual, search, residual_dot = columns[going], residual[:, going], search[:, going], \
                residual_dot[going]
        preconditioned = preconditioner[:, columns] * residual
        new_dot = (residual * preconditioned).sum(0)
        search = preconditioned + (new_dot / residual_dot) * search
        residual_dot = new_dot
    return solution, iteration


def _exact_line_search(u, direction, margins, direction_margins, targets, weights, max_iter: int = 60):
    """Minimise phi(t) = objective(u + t d) per column. phi' is continuous and piecewise linear, so Newton steps
    on phi' inside a bracket (bisecting when a step leaves it) end on the exact root; columns leave when done."""
    import torch

    u_dot_d = (u * direction).sum(0)
    d_dot_d = (direction * direction).sum(0)
    y_f, y_q = targets * margins, targets * direction_margins
    weighted_q = weights * y_q
    initial_slope = (u_dot_d - 2 * (weighted_q * (1 - y_f).clamp_min(0)).sum(0)).abs()
    steps = torch.ones_like(u_dot_d)
    columns = torch.arange(steps.numel(), device=steps.device)
    low, high = torch.zeros_like(steps), torch.full_like(steps, float("inf"))
    for _ in range(max_iter):
        step = steps[columns]
        slack = (1 - y_f[:, columns] - step * y_q[:, columns]).clamp_min(0)
        slope = u_dot_d[columns] + step * d_dot_d[columns] - 2 * (weighted_q[:, columns] * slack).sum(0)
        curvature = d_dot_d[columns] + 2 * (weighted_q[:, columns] * y_q[:, columns] * (slack > 0)).sum(0)
        low = torch.where(slope < 0, step, low)
        high = torch.where(slope > 0, step, high)
        proposal = step - slope / curvature
        proposal = torch.where((proposal <= low) | (proposal >= high), (low + high) / 2, proposal)
        going = (slope.abs() > 1e-12 * initial_slope[columns]) & (high - low > 1e-15 * high)
        steps[columns[going]] = proposal[going]
        if not going.all():
            columns, low, high = columns[going], low[going], high[going]
            if columns.numel() == 0:
                break
    return steps


def scores_from_dual(x_bias: "torch.Tensor", dual_coefficients: "torch.Tensor", targets: "torch.Tensor",
                     test_bias: "torch.Tensor") -> "torch.Tensor":
    """Decision values ``Tensor[M, P]`` of the rows ``test_bias`` [M, D + 1] for P problems solved on the rows
    ``x_bias`` [N, D + 1] with ``targets`` [N, P] (+1/-1) and ``dual_coefficients`` [N, P]
    (:attr:`SquaredHingeSolution.dual_coefficients`). By the KKT conditions the primal weights are
    ``w = sum_i alpha_i y_i [x_i, 1]`` with ``alpha_i = 2 C s_i max(0, 1 - y_i f_i)``."""
    weight_vectors = x_bias.T @ (dual_coefficients * targets)
    return test_bias @ weight_vectors
