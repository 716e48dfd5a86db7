"""VOC07 full-SVM protocol: the reference-style sequential LinearSVC loop against the batched exact solver.

Both run in this process on the same synthetic features (non-negative, correlated, VOC-like class frequencies,
multi-label, a few difficult images) and the same 19 costs. Prints both wall times, the speed ratio, whether every
class chose the same cost and the largest |AP difference|.

    python benchmarks/svm_protocol.py                 # 2000 x 2048, 2000 test, 20 classes (a few minutes)
    python benchmarks/svm_protocol.py --full          # 5011 x 8192, 4952 test (the real size; ~25 min baseline)
    python benchmarks/svm_protocol.py --device cuda   # the fast solver on a GPU
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ssl_challenge.evaluation.svm import protocol_costs, train_and_test_full_svm

# VOC07 trainval class frequencies (approximate, %): person is frequent, most classes are rare.
CLASS_FREQUENCIES = [5.7, 4.8, 6.4, 4.4, 6.0, 3.6, 15.2, 6.4, 8.7, 2.7, 5.3, 8.3, 5.6, 4.8, 40.2, 5.0, 1.9, 4.3,
                     5.3, 5.1]


def synthetic_voc_features(num_train: int, num_test: int, dims: int, num_classes: int, seed: int = 0):
    """(train_x, train_y, test_x, test_y): ReLU features of a low-rank latent code plus class signatures.

    Labels are 1 / -1 / 0 (about 3% of positives marked difficult, as in VOC). The spectrum of the features decays
    like real pooled CNN features (a large mean direction, then a power law), which is what makes large costs slow
    for liblinear.
    """
    rng = np.random.default_rng(seed)
    latent_dims = 128
    mixing = rng.normal(size=(latent_dims, dims)) * (np.arange(1, latent_dims + 1) ** -0.6)[:, None]
    signatures = rng.normal(size=(num_classes, dims)) * (rng.random((num_classes, dims)) < 0.1)
    frequencies = np.resize(np.asarray(CLASS_FREQUENCIES) / 100, num_classes)

    def split(rows):
        labels = np.where(rng.random((rows, num_classes)) < frequencies, 1, -1).astype(np.int8)
        latent = rng.normal(size=(rows, latent_dims))
        strength = rng.uniform(0.2, 1.0, size=(rows, num_classes))  # objects vary in how visible they are
        signal = latent @ mixing + ((labels > 0) * strength) @ signatures * 0.6
        features = np.maximum(signal + 0.5 + 0.8 * rng.normal(size=(rows, dims)), 0).astype(np.float32)
        difficult = (labels > 0) & (rng.random(labels.shape) < 0.03)
        labels[difficult] = 0
        return features, labels

    train_x, train_y = split(num_train)
    test_x, test_y = split(num_test)
    return train_x, train_y, test_x, test_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the real size: 5011 x 8192 trainval, 4952 test")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads of the fast solver")
    parser.add_argument("--device", default=None, help="torch device of the fast solver (default cpu)")
    parser.add_argument("--skip-baseline", action="store_true", help="time only the fast solver")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if args.full:
        args.train, args.test, args.dims = 5011, 4952, 8192

    train_x, train_y, test_x, test_y = synthetic_voc_features(args.train, args.test, args.dims, args.classes)
    classes = [f"class{c:02d}" for c in range(args.classes)]
    costs = protocol_costs([1.0, 10.0, 100.0], extra_powers=True)
    print(f"trainval {train_x.shape}, test {test_x.shape}, {len(classes)} classes, {len(costs)} costs", flush=True)

    fast = train_and_test_full_svm(train_x, train_y, test_x, test_y, costs, classes, n_jobs=args.threads,
                                   solver="newton", device=args.device)
    print(f"newton   : {fast['seconds']:8.1f} s  mAP {fast['map']:.4f}  {fast['solver_stats']}", flush=True)
    figures = {"shape": list(train_x.shape), "test": args.test, "newton_seconds": fast["seconds"],
               "newton_map": fast["map"], "newton_stats": fast["solver_stats"]}
    if not args.skip_baseline:
        # the reference scripts: sequential LinearSVC per class and cost, one process
        base = train_and_test_full_svm(train_x, train_y, test_x, test_y, costs, classes, n_jobs=1,
                                       solver="liblinear")
        print(f"liblinear: {base['seconds']:8.1f} s  mAP {base['map']:.4f}  {base['solver_stats']}", flush=True)
        same_costs = [base["per_class"][name]["cost"] == fast["per_class"][name]["cost"] for name in classes]
        ap_difference = max(abs(base["per_class"][name]["ap"] - fast["per_class"][name]["ap"]) for name in classes)
        figures.update(liblinear_seconds=base["seconds"], liblinear_map=base["map"],
                       speedup=base["seconds"] / fast["seconds"], same_costs=all(same_costs),
                       classes_with_other_cost=[name for name, same in zip(classes, same_costs) if not same],
                       max_ap_difference=ap_difference, map_difference=abs(base["map"] - fast["map"]),
                       chosen_costs=[base["per_class"][name]["cost"] for name in classes],
                       liblinear_not_converged=base["solver_stats"]["liblinear_not_converged"])
        print(f"speed-up {figures['speedup']:.1f}x; same chosen costs: {all(same_costs)}; "
              f"max |AP diff| {ap_difference:.4f}; |mAP diff| {figures['map_difference']:.4f}")
        print("chosen costs:", figures["chosen_costs"])
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
