"""Track 1: the VOC07 linear SVM protocol (one binary squared-hinge SVM per class, cost chosen by 3-fold CV).

The SVM itself (the primal, the ``"liblinear"`` and ``"newton"`` solvers, the row normalisation) is in
``svm_solver.py``; this module is the protocol around it: the cost list, the +1/-1 targets (difficult images are
negatives), the reference's stratified folds, the cost choice and the per-class test AP. With ``"liblinear"``
there is one ``LinearSVC`` fit per class, fold and cost as in the reference scripts; with ``"newton"`` (what
``"auto"`` picks) every (class, fold, cost) problem is solved in one batch.

Cost choice: the best mean CV average precision (scikit-learn's non-interpolated AP, as ``cross_val_score`` with
``scoring="average_precision"``); ties go to the first cost in the order of ``costs``.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..core.finite import require_finite
from ..core.io import read_npz
from ..core.numerics import numerics_record
from ..core.threads import torch_threads
from .ap import average_precision, non_interpolated_average_precision
from .folds import stratified_folds
from .svm_solver import (CLASS_WEIGHT, fit_liblinear, l2_normalise_rows, scores_from_dual, solve_squared_hinge,
                         spectral_basis, with_bias)

SOLVERS = ("auto", "liblinear", "newton")
NUM_FOLDS = 3


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


def training_targets(labels: np.ndarray) -> np.ndarray:
    """VOC labels (1 / -1 / 0 difficult) -> +1 / -1 training targets: difficult images are negatives."""
    return np.where(np.asarray(labels) > 0, 1, -1).astype(np.int8)


def test_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Track AP of one class on the test split: difficult (label 0) images are left out."""
    labels = np.asarray(labels)
    kept = labels != 0
    return average_precision(scores[kept], labels[kept])


def cv_folds(targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The reference's folds: ``StratifiedKFold(3)`` unshuffled on one class's +1/-1 targets (folds.py)."""
    return stratified_folds(targets, NUM_FOLDS)


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


def _liblinear_protocol(train_x, train_targets, test_x, costs, n_jobs, log=None):
    """Per class: (mean CV AP per cost, chosen index, test decision values, non-converged fits)."""
    from joblib import Parallel, delayed

    num_classes = train_targets.shape[1]
    # loky memory-maps the large arrays once instead of pickling them for every task
    per_class = Parallel(n_jobs=n_jobs, max_nbytes="1M", return_as="generator")(
        delayed(_liblinear_one_class)(train_x, train_targets[:, c], test_x, costs) for c in range(num_classes))
    results = []
    for result in per_class:
        results.append(result)
        if log is not None:
            log(f"liblinear: {len(results)}/{num_classes} classes done ({len(costs)} costs x {NUM_FOLDS} folds "
                "and the refit each)")
    return results


def _newton_progress(log: Callable[[str], None] | None, phase: str):
    """An ``on_step`` for :func:`solve_squared_hinge` that logs the phase's converged SVMs (None without log)."""
    if log is None:
        return None
    return lambda steps, converged, total: log(f"{phase}: {converged}/{total} SVMs converged after {steps} "
                                               "Newton steps")


def _newton_protocol(train_x, train_targets, test_x, costs, device, log=None):
    import torch

    device = torch.device(device or "cpu")
    num_classes, num_costs = train_targets.shape[1], len(costs)
    x_bias = with_bias(train_x, device)
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
    cv_solution = solve_squared_hinge(basis, column_targets, weights.contiguous(), gram=gram,
                                      on_step=_newton_progress(log, "cross-validation (class x fold x cost)"))
    gram = gram if gram is not None else cv_solution.gram
    cv_margins = cv_solution.margins.reshape(len(targets), num_classes, NUM_FOLDS, num_costs).cpu().numpy()

    results, stats = [], dict(cv_solution.stats)
    for c in range(num_classes):
        fold_ap = np.array([[cv_average_precision(cv_margins[held, c, f, j], train_targets[held, c])
                             for j in range(num_costs)] for f, (_, held) in enumerate(folds[c])])
        mean_cv_ap = fold_ap.mean(axis=0).tolist()
        results.append([mean_cv_ap, choose_cost(mean_cv_ap)])

    chosen_costs = torch.tensor([costs[chosen] for _, chosen in results], dtype=torch.float64, device=device)
    refit = solve_squared_hinge(basis, targets, class_weight * chosen_costs, gram=gram,
                                on_step=_newton_progress(log, "refit at the chosen costs"))
    test_scores = scores_from_dual(x_bias, refit.dual_coefficients, targets, with_bias(test_x, device))
    test_scores = test_scores.cpu().numpy()
    stats = {key: stats[key] + refit.stats[key] for key in stats}
    return [(mean_ap, chosen, test_scores[:, c], 0) for c, (mean_ap, chosen) in enumerate(results)], stats


def train_and_test_full_svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                            costs: list[float], classes: list[str], n_jobs: int, solver: str = "auto",
                            device=None, log: Callable[[str], None] | None = None) -> dict:
    """The full VOC07 SVM protocol for one layer: the report of :func:`full_svm_report_and_test_scores`."""
    return full_svm_report_and_test_scores(train_x, train_y, test_x, test_y, costs, classes, n_jobs, solver,
                                           device, log)[0]


def full_svm_report_and_test_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                                    test_y: np.ndarray, costs: list[float], classes: list[str], n_jobs: int,
                                    solver: str = "auto", device=None, log: Callable[[str], None] | None = None
                                    ) -> tuple[dict, np.ndarray]:
    """The full VOC07 SVM protocol for one layer; returns (report, test decision values float64 [M, C]), the
    latter for the challenge's classification submission file (:mod:`ssl_challenge.evaluation.submission_formats`).

    Shapes: ``train_x`` [N, D], ``train_y`` int8 [N, C] with 1 / -1 / 0 (difficult), ``test_x`` [M, D],
    ``test_y`` [M, C]. ``n_jobs`` processes (liblinear) or BLAS threads (newton). ``device`` (newton only): a torch
    device, CPU when None. ``log`` receives progress lines (classes done, or SVMs converged per Newton step).
    Returns a JSON-able dict: ``map`` (x100), ``per_class`` {class: {ap (x100), cost,
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
    train_x, test_x = l2_normalise_rows(train_x), l2_normalise_rows(test_x)
    train_targets = training_targets(train_y)
    if solver == "liblinear":
        per_class = _liblinear_protocol(train_x, train_targets, test_x, costs, n_jobs, log)
        stats = {"liblinear_not_converged": int(sum(item[3] for item in per_class))}
    else:
        with torch_threads(n_jobs):
            per_class, stats = _newton_protocol(train_x, train_targets, test_x, costs, device, log)

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


# ------------------------------------------------------------------------------------------------ test-scores files
TEST_SCORES_WRITER = ("save_test_scores of stages.svm_track (rule svm_full) or save_lowshot_scores of "
                      "stages.lowshot_track (rules svm_lowshot and merge_lowshot)")


def read_test_scores(path) -> dict[str, np.ndarray]:
    """Every array of a test-scores file (``<result>.scores.npz``): ``image_ids`` and ``classes``, then the full
    SVM's ``scores`` [M, C] or the low-shot SVMs' ``k<k>_sample<s>`` [M, C]; the one reader of the format. A
    truncated or damaged file raises :class:`~ssl_challenge.core.io.CorruptFileError` naming it and its writer."""
    def check(names: list[str]) -> None:
        if "image_ids" not in names or "classes" not in names:
            raise ValueError(f"{path}: not a test-scores file (expected 'image_ids' and 'classes', found {names}); "
                             f"it is written by {TEST_SCORES_WRITER}")

    return read_npz(path, TEST_SCORES_WRITER, check=check)
