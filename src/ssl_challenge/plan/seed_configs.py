"""The configuration of one seed's run in the seeds study (:mod:`.seeds_study` aggregates the runs).

Its own module so that the ``seed_config`` jobs' code digest covers this and not the study's statistics: a change
to the aggregation then marks only the ``seeds_study`` table job stale, not the seeds' whole runs. Torch-free.
"""
from __future__ import annotations

import copy

DATA_PATH_KEYS = ("imagenet_root", "voc07_root", "places205_root")


def seeded_config(config: dict, seed: int, base_dir: str | None = None) -> dict:
    """``config`` with the seed of every training run set to ``seed``: each model's ``seed`` and each CODC
    experiment's ``seed`` (the data set, its splits and the evaluations' draws stay as configured, so the spread
    is the training's run-to-run noise). The study itself is removed (a seed's run is a plain experiment). A seed
    runs in its own working directory: relative data paths are made absolute against ``base_dir``."""
    from pathlib import Path

    seeded = copy.deepcopy(config)
    data = seeded.get("data", {})
    places = [(data, key) for key in DATA_PATH_KEYS] + [(data.get("embedded", {}), "fashion_mnist_dir")]
    for section, key in places:
        if base_dir and section.get(key) and not Path(section[key]).is_absolute():
            section[key] = str(Path(base_dir, section[key]))
    for model in seeded.get("models", {}).values():
        model["seed"] = seed
    for experiment in seeded.get("codc", {}).values():
        experiment["seed"] = seed
    seeded.pop("seeds_study", None)
    return seeded
