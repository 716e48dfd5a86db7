"""Track 1: the VOC07 linear SVM protocol (one binary squared-hinge SVM per class, cost chosen by 3-fold CV).

Every SVM here solves the same strictly convex primal as scikit-learn's ``LinearSVC`` with the reference settings
(squared hinge, L2 penalty, the bias a regularised constant feature with intercept_scaling 1, class weights
positive 2 / negative 1)::

    min_w  0.5 * ||w||^2 + sum_i C * s_i * max(0, 1 - y_i * w . [x_i, 1])^2,   s_i = 2 if y_i = +1 else 1

Two solvers:

- ``"liblinear"``: ``LinearSVC`` itself (dual coordinate descent, tol 1e-4, max_iter 2000, ``random_state=0`` so
  that runs repeat exactly), one fit per class, fold and cost as in the reference scripts. The ground truth.
- ``"newton"`` (what ``"auto"`` picks): an exact batched solver (:func:`solve_squared_hinge`). The
  rows are rotated once into an orthogonal basis ``Z`` with ``Z Z^T = [X, 1][X, 1]^T`` (an eigendecomposition of
  the Gram matrix), in which every problem, whatever its rows, costs and class, is the same primal. All problems
  (class x cost x fold) are solved together by Newton's method with Jacobi-preconditioned conjugate gradients and
  an exact line search, so that the work is matrix products over all of them at once (BLAS-3, or the GPU when
  ``device`` is one). Since the Hessian is at least the identity, a gradient norm of ``g`` bounds the distance
  to the unique optimum by ``g``; iterations stop at a relative gradient norm of 1e-8.

Cost choice: the best mean CV average precision (scikit-learn's non-interpolated AP, as ``cross_val_score`` with
``scoring="average_precision"``); ties go to the first cost in the order of ``costs``.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..finite import require_finite
from ..numerics import numerics_record
from .ap import average_precision, non_interpolated_average_precision

CLASS_WEIGHT = {1: 2.0, -1: 1.0}
SOLVERS = ("auto", "liblinear", "newton")
NUM_FOLDS = 3
MIN_CG_BATCH = 64  # below this many columns, conjugate gradients stop paying off against direct solves
LIBLINEAR_SETTINGS = dict(penalty="l2", loss="squared_hinge", dual=True, tol=1e-4, max_iter=2000,
                          intercept_scaling=1.0, class_weight=CLASS_WEIGHT, random_state=0)


def protocol_costs(costs: Sequence[float], extra_powers: bool) -> list[float]:
    """The user's costs in their order, then (when ``extra_powers``) 0.5**k for k = 4..19 in that order.

    Duplicates (compared as floats, never as strings) keep their first position. The reference list
    [1, 10, 100] with extra powers gives 19 costs.
    """
    ordered = [float(cost) for cost in costs]
    if extra_powers:
        ordered += [0.5 ** power for power in range(4, 20)]
    unique: list[float] = []
    for cost in ordered:
        if not np.isfinite(cost) or cost <= 0:
            raise ValueError(f"SVM costs must be positive and finite, got {cost!r}")
        if cost not in unique:
            unique.append(cost)
    return unique


def normalise_features(features: np.ndarray) -> np.ndarray:
    """float64 copy of ``features`` [N, D] with each row divided by (its L2 norm + 1e-5), as the reference."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"SVM features must be a 2-d array [images, dims], got shape {features.shape}")
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-5)


def training_targets(labels: np.ndarray) -> np.ndarray:
    """VOC labels (1 / -1 / 0 difficult) -> +1 / -1 training targets: difficult images are negatives."""
    return np.where(np.asarray(labels) > 0, 1, -1).astype(np.int8)


def test_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Track AP of one class on the test split: difficult (label 0) images are left out."""
    labels = np.asarray(labels)
    kept = labels != 0
    return average_precision(scores[kept], labels[kept])


def cv_folds(targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference's folds: ``StratifiedKFold(3)`` unshuffled on one class's +1/-1 targets."""
    from sklearn.model_selection import StratifiedKFold

    with warnings.catch_warnings():  # "least populated class has only n members": the reference warns too
        warnings.simplefilter("ignore", UserWarning)
        return list(StratifiedKFold(n_splits=NUM_FOLDS).split(np.zeros((targets.size, 1)), targets))


def cv_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """The CV score of the reference: scikit-learn's non-interpolated AP of +1/-1 targets."""
    return non_interpolated_average_precision(scores, targets)


def choose_cost(mean_cv_ap: Sequence[float]) -> int:
    """Index of the best mean CV AP; ties go to the first in cost order."""
    return int(np.argmax(np.asarray(mean_cv_ap, dtype=np.float64)))


def _check_inputs(train_x, train_y, test_x, test_y, costs, classes):
    require_finite(train_x, "SVM: trainval features")
    require_finite(test_x, "SVM: test features")
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError(f"SVM: {train_x.shape[0]}/{test_x.shape[0]} feature rows but "
                         f"{train_y.shape[0]}/{test_y.shape[0]} label rows (trainval/test)")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"SVM: trainval features have {train_x.shape[1]} dims, test features {test_x.shape[1]}")
    if train_y.shape[1] != len(classes) or test_y.shape[1] != len(classes):
        raise ValueError(f"SVM: {len(classes)} classes but label matrices of shapes {train_y.shape}, "
                         f"{test_y.shape}")
    if not costs:
        raise ValueError("SVM: the cost list is empty")
    for index, name in enumerate(classes):
        positives = int((train_y[:, index] > 0).sum())
        if positives < NUM_FOLDS or positives > train_y.shape[0] - NUM_FOLDS:
            raise ValueError(f"SVM class {name!r}: {positives} positives among {train_y.shape[0]} trainval "
                             f"images; {NUM_FOLDS}-fold CV needs at least {NUM_FOLDS} of each")
        if not (test_y[:, index] > 0).any():
            raise ValueError(f"SVM class {name!r}: no positive test image, AP is undefined")


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


def _liblinear_one_class(train_x, targets, test_x, costs):
    """CV over costs, refit at the chosen cost, test decision values (the reference, for one class)."""
    folds = cv_folds(targets)
    mean_cv_ap, not_converged = [], 0
    for cost in costs:
        fold_ap = []
        for train_rows, held_rows in folds:
            model, converged = fit_liblinear(train_x[train_rows], targets[train_rows], cost)
            not_converged += not converged
            fold_ap.append(cv_average_precision(model.decision_function(train_x[held_rows]), targets[held_rows]))
        mean_cv_ap.append(float(np.mean(fold_ap)))
    chosen = choose_cost(mean_cv_ap)
    model, converged = fit_liblinear(train_x, targets, costs[chosen])
    return mean_cv_ap, chosen, model.decision_function(test_x), not_converged + (not converged)


def _liblinear_protocol(train_x, train_targets, test_x, costs, n_jobs):
    """Per class: (mean CV AP per cost, chosen index, test decision values, non-converged fits)."""
    from joblib import Parallel, delayed

    # loky memory-maps the large arrays once instead of pickling them for every task
    return Parallel(n_jobs=n_jobs, max_nbytes="1M")(
        delayed(_liblinear_one_class)(train_x, train_targets[:, c], test_x, costs)
        for c in range(train_targets.shape[1]))


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
                        max_cg: int = 1000) -> SquaredHingeSolution:
    """Solve M independent problems  min_u 0.5 ||u||^2 + sum_i weights[i, m] * max(0, 1 - targets[i, m] z_i . u)^2.

    ``basis`` Z [N, R], ``targets`` [N, M] (+1/-1), ``weights`` [N, M] (C * class weight; 0 leaves a row out),
    ``gram`` Z Z^T [N, N] (computed when needed and not given). Finite Newton method: with A the rows inside the
    margin, the Newton point minimises the quadratic 0.5 ||u||^2 + sum_A w_i (y_i - z_i . u)^2. It is found
    either directly in row space, u = Z_A^T b with (K_AA + diag(1 / 2w_A)) b = y_A (a Cholesky of |A| x |A|, cheap
    when few rows are inside the margin: large costs), or by conjugate gradients on H = I + 2 Z_A^T W_A Z_A
    (Jacobi preconditioner, good because Z^T Z is diagonal: small costs). The step along the Newton direction is
    exact (the objective is piecewise quadratic on a line). Converged columns leave the batch.
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


def _newton_protocol(train_x, train_targets, test_x, costs, device):
    import torch

    device = torch.device(device or "cpu")
    num_classes, num_costs = train_targets.shape[1], len(costs)
    x_bias = torch.from_numpy(np.hstack([train_x, np.ones((train_x.shape[0], 1))])).to(device)
    basis, gram = spectral_basis(x_bias, return_gram=True)
    targets = torch.from_numpy(train_targets.astype(np.float64)).to(device)
    class_weight = torch.where(targets > 0, CLASS_WEIGHT[1], CLASS_WEIGHT[-1])
    cost_tensor = torch.tensor(costs, dtype=torch.float64, device=device)

    # CV: one column per (class, fold, cost); rows outside the fold's training part get weight 0.
    folds = [cv_folds(train_targets[:, c]) for c in range(num_classes)]
    in_train = torch.zeros(train_x.shape[0], num_classes, NUM_FOLDS, dtype=torch.float64, device=device)
    for c, class_folds in enumerate(folds):
        for f, (train_rows, _) in enumerate(class_folds):
            in_train[torch.from_numpy(train_rows).to(device), c, f] = 1.0
    weights = (class_weight[:, :, None, None] * in_train[:, :, :, None] * cost_tensor).reshape(len(targets), -1)
    column_targets = targets[:, :, None, None].expand(-1, -1, NUM_FOLDS, num_costs).reshape(len(targets), -1)
    cv_solution = solve_squared_hinge(basis, column_targets, weights.contiguous(), gram=gram)
    gram = gram if gram is not None else cv_solution.gram
    cv_margins = cv_solution.margins.reshape(len(targets), num_classes, NUM_FOLDS, num_costs).cpu().numpy()

    results, stats = [], dict(cv_solution.stats)
    for c in range(num_classes):
        fold_ap = np.array([[cv_average_precision(cv_margins[held, c, f, j], train_targets[held, c])
                             for j in range(num_costs)] for f, (_, held) in enumerate(folds[c])])
        mean_cv_ap = fold_ap.mean(axis=0).tolist()
        results.append([mean_cv_ap, choose_cost(mean_cv_ap)])

    chosen_costs = torch.tensor([costs[chosen] for _, chosen in results], dtype=torch.float64, device=device)
    refit = solve_squared_hinge(basis, targets, class_weight * chosen_costs, gram=gram)
    # KKT: w = sum_i alpha_i y_i [x_i, 1] with alpha_i = 2 C s_i max(0, 1 - y_i f_i)
    weight_vectors = x_bias.T @ (refit.dual_coefficients * targets)
    test_bias = torch.from_numpy(np.hstack([test_x, np.ones((test_x.shape[0], 1))])).to(device)
    test_scores = (test_bias @ weight_vectors).cpu().numpy()
    stats = {key: stats[key] + refit.stats[key] for key in stats}
    return [(mean_ap, chosen, test_scores[:, c], 0) for c, (mean_ap, chosen) in enumerate(results)], stats


def train_and_test_full_svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                            costs: list[float], classes: list[str], n_jobs: int, solver: str = "auto",
                            device=None) -> dict:
    """The full VOC07 SVM protocol for one layer: the report of :func:`full_svm_report_and_test_scores`."""
    return full_svm_report_and_test_scores(train_x, train_y, test_x, test_y, costs, classes, n_jobs, solver,
                                           device)[0]


def full_svm_report_and_test_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                                    test_y: np.ndarray, costs: list[float], classes: list[str], n_jobs: int,
                                    solver: str = "auto", device=None) -> tuple[dict, np.ndarray]:
    """The full VOC07 SVM protocol for one layer; returns (report, test decision values float64 [M, C]), the
    latter for the challenge's classification submission file (:mod:`ssl_challenge.submission`).

    Shapes: ``train_x`` [N, D], ``train_y`` int8 [N, C] with 1 / -1 / 0 (difficult), ``test_x`` [M, D],
    ``test_y`` [M, C]. ``n_jobs`` processes (liblinear) or BLAS threads (newton). ``device`` (newton only): a torch
    device, CPU when None. Returns a JSON-able dict: ``map`` (x100), ``per_class`` {class: {ap (x100), cost,
    cost_index, cv_ap (mean CV AP per cost, in ``costs`` order)}}, ``costs``, ``solver``, ``seconds`` and solver
    statistics.
    """
    if solver not in SOLVERS:
        raise ValueError(f"SVM solver must be one of {SOLVERS}, got {solver!r}")
    solver = "newton" if solver == "auto" else solver
    costs = [float(cost) for cost in costs]
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    _check_inputs(train_x, train_y, test_x, test_y, costs, classes)
    start = time.perf_counter()
    train_x, test_x = normalise_features(train_x), normalise_features(test_x)
    train_targets = training_targets(train_y)
    if solver == "liblinear":
        per_class = _liblinear_protocol(train_x, train_targets, test_x, costs, n_jobs)
        stats = {"liblinear_not_converged": int(sum(item[3] for item in per_class))}
    else:
        with _torch_threads(n_jobs):
            per_class, stats = _newton_protocol(train_x, train_targets, test_x, costs, device)

    report = {}
    test_scores = np.empty((test_x.shape[0], len(classes)), dtype=np.float64)
    for c, name in enumerate(classes):
        mean_cv_ap, chosen, scores, _ = per_class[c]
        test_scores[:, c] = scores
        report[name] = {"ap": 100.0 * test_average_precision(scores, test_y[:, c]), "cost": costs[chosen],
                        "cost_index": chosen, "cv_ap": [float(value) for value in mean_cv_ap]}
    return {
        "map": float(np.mean([entry["ap"] for entry in report.values()])),
        "per_class": report,
        "costs": costs,
        "solver": solver,
        "cost_choice": "best mean 3-fold CV average precision (non-interpolated); ties -> first in costs order",
        "test_ap": "all-point interpolated (VOC2010+), difficult test images excluded per class",
        "seconds": time.perf_counter() - start,
        "solver_stats": stats,
        "numerics": numerics_record(),
    }, test_scores


class _torch_threads:
    """Run a block with ``n`` torch intra-op threads (BLAS), restoring the previous number afterwards."""

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self):
        import torch

        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.previous)
