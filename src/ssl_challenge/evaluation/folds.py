"""The reference's cross-validation folds, without importing scikit-learn.

The VOC07 SVM protocol chooses each class's cost by ``StratifiedKFold(3)`` (unshuffled) over that class's +1/-1
targets. Importing scikit-learn for that one split costs about as much CPU time as the rest of a miniature SVM job
(scikit-learn pulls in scipy.stats), so the split is written out here; a unit test checks it against
scikit-learn's on many target vectors.

How an unshuffled stratified split assigns rows (scikit-learn >= 0.22):
- classes are numbered in the order of their first appearance in ``targets``;
- the sorted class numbers are dealt round-robin to the folds, which fixes how many rows of each class every fold
  gets (fold ``i`` receives the class numbers at positions ``i, i + n, i + 2n, ...`` of that sorted list);
- within a class, rows go to fold 0 first, then fold 1, ..., in row order.
"""
from __future__ import annotations

import numpy as np


def stratified_folds(targets: np.ndarray, num_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_rows, test_rows)] * num_folds`` of an unshuffled stratified split of ``targets`` [N].

    Rows are int64 indices in increasing order, as ``StratifiedKFold(num_folds).split`` gives them.
    """
    targets = np.asarray(targets).ravel()
    if num_folds < 2:
        raise ValueError(f"stratified folds: need at least 2 folds, got {num_folds}")
    if targets.size < num_folds:
        raise ValueError(f"stratified folds: {targets.size} rows cannot fill {num_folds} folds")
    _, first_rows, inverse = np.unique(targets, return_index=True, return_inverse=True)
    order_of_appearance = np.argsort(np.argsort(first_rows))  # class number by first appearance
    encoded = order_of_appearance[inverse.ravel()]
    num_classes = first_rows.size
    if np.bincount(encoded).max() < num_folds:
        raise ValueError(f"stratified folds: no class has {num_folds} rows (counts {np.bincount(encoded).tolist()})")
    dealt = np.sort(encoded)
    rows_per_fold = np.stack([np.bincount(dealt[fold::num_folds], minlength=num_classes)
                              for fold in range(num_folds)])  # [folds, classes]
    test_fold = np.empty(targets.size, dtype=np.int64)
    for label in range(num_classes):
        test_fold[encoded == label] = np.repeat(np.arange(num_folds), rows_per_fold[:, label])
    rows = np.arange(targets.size)
    return [(rows[test_fold != fold], rows[test_fold == fold]) for fold in range(num_folds)]
