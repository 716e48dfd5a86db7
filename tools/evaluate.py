"""Evaluate one checkpoint trained elsewhere: `make evaluate WEIGHTS=path/to/model.pth LAYOUT=mmselfsup`.

Writes results/evaluate/<name>/config.yaml (the base configuration with config/examples/evaluate.yaml over it:
only this model, as `method: external`), runs Snakemake there on the result files of the chosen tracks (by
default every track the base configuration runs; no other model is trained or evaluated), and prints the model's
leaderboard row beside the published rows (also written to results/evaluate/<name>/leaderboard.md). The base is
config/config.yaml (the embedded data) or, when
config/site.yaml exists, config/challenge.yaml with the site file merged over it (the real data sets); --base
chooses another.

    .venv/bin/python tools/evaluate.py --weights model.pth --layout mmselfsup [--name NAME] [--tracks voc07_svm ...]
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ssl_challenge.core.config import ConfigError  # noqa: E402
from ssl_challenge.models.external import LAYOUTS  # noqa: E402  (torch-free)
from ssl_challenge.plan import planning, site_config  # noqa: E402
from ssl_challenge.plan.config_checks import validate_config  # noqa: E402

EXAMPLE = REPO / "config" / "examples" / "evaluate.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OPTIONAL_TRACKS = ("imagenet_linear", "voc07_detection")  # tracks a config enables
ALL_TRACKS = planning.TRACKS + OPTIONAL_TRACKS
LAYER_TRACKS = ("voc07_svm", "voc07_lowshot")  # one result file per layer


def default_base() -> Path:
    if (REPO / site_config.SITE_CONFIG).is_file():
        return REPO / "config" / "challenge.yaml"
    return REPO / "config" / "config.yaml"


def model_name(weights: Path, name: str | None) -> str:
    """``name``, or one made from the file name (``ResNet50-ep200.pth`` -> ``resnet50_ep200``)."""
    if name is None:
        name = re.sub(r"[^a-z0-9_]+", "_", weights.stem.lower()).strip("_")
        name = name if re.match(r"[a-z]", name) else f"model_{name}"
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise SystemExit(f"NAME={name!r}: a model name is lower-case letters, digits and _, starting with a letter")
    return name


def derived_config(base: Path, name: str, weights: Path, layout: str, backbone: str, tracks: list[str]) -> dict:
    """The base configuration with only the external model ``name``, the optional tracks enabled as asked."""
    config = yaml.safe_load(base.read_text())
    site_config.merge_site_config(config, REPO / site_config.SITE_CONFIG)  # only over real data
    overlay = yaml.safe_load(EXAMPLE.read_text())
    (entry,) = overlay["models"].values()
    entry = copy.deepcopy(entry)
    entry["backbone"] = {"name": backbone}
    entry["method_options"] = {"weights": str(weights), "layout": layout}
    config.update({key: value for key, value in overlay.items() if key != "models"}, models={name: entry})
    evaluation = config.setdefault("evaluation", {})
    for track in OPTIONAL_TRACKS:
        evaluation.setdefault(track, {})["enabled"] = track in tracks
    return config


def track_targets(config: dict, name: str, tracks: list[str]) -> dict[str, list[str]]:
    """The result files of ``name`` on each track (the patterns of rules/common.smk: layer_result_file and
    probe_file), read from the validated config (its layers)."""
    checked = validate_config(copy.deepcopy(config), SCHEMA)
    targets = {}
    for track in tracks:
        if track in LAYER_TRACKS:
            layers = checked["evaluation"][track]["layers"]
            targets[track] = [f"results/eval/{name}/{track}/{layer}.json" for layer in layers]
        else:
            targets[track] = [f"results/eval/{name}/{track}.json"]
    return targets


def leaderboard_text(name: str, files: dict[str, list[str]]) -> str:
    from ssl_challenge.reporting.leaderboard import PUBLISHED_SOURCE, measured_table, published_table
    from ssl_challenge.reporting.table_formats import markdown_table

    measured = measured_table({name: files})
    published = published_table().drop(columns=["source"])
    return "\n".join([f"# {name}", "", "Measured by this pipeline (best layer per track, x100):", "",
                      markdown_table(measured), "", f"## Published reference figures ({PUBLISHED_SOURCE})", "",
                      markdown_table(published), ""])


def default_tracks(base: Path) -> list[str]:
    """Every track the base configuration runs for a model: the leaderboard's three and the enabled optional ones."""
    config = yaml.safe_load(base.read_text())
    site_config.merge_site_config(config, REPO / site_config.SITE_CONFIG)
    evaluation = validate_config(config, SCHEMA)["evaluation"]
    return list(planning.TRACKS) + [track for track in OPTIONAL_TRACKS if evaluation[track]["enabled"]]


def parse_tracks(text: str | None, default: list[str]) -> list[str]:
    tracks = default if not text else [track for track in re.split(r"[,\s]+", text) if track]
    unknown = [track for track in tracks if track not in ALL_TRACKS]
    if unknown:
        raise SystemExit(f"TRACKS: unknown track(s) {unknown}; expected some of {list(ALL_TRACKS)}")
    return tracks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path, help="the checkpoint file")
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="how the checkpoint's keys are named")
    parser.add_argument("--name", help="the leaderboard row's name (default: from the file name)")
    parser.add_argument("--tracks", help="tracks, separated by commas or spaces (default: every track the base "
                        f"configuration runs; some of {' '.join(ALL_TRACKS)})")
    parser.add_argument("--backbone", default="resnet50", help="the architecture of the weights (default resnet50)")
    parser.add_argument("--base", type=Path, help="the base configuration (default: see above)")
    parser.add_argument("--cores", default="all", help="cores Snakemake may use (default all)")
    args = parser.parse_args(argv)

    weights = args.weights.resolve()
    if not weights.is_file():
        raise SystemExit(f"WEIGHTS={args.weights}: no such file")
    base = (args.base or default_base()).resolve()
    try:
        name, tracks = model_name(weights, args.name), parse_tracks(args.tracks, default_tracks(base))
        config = derived_config(base, name, weights, args.layout, args.backbone, tracks)
        targets = track_targets(config, name, tracks)
    except ConfigError as error:
        raise SystemExit(f"{base} with {name}: {error}") from None
    workdir = REPO / "results" / "evaluate" / name
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(f"# Written by tools/evaluate.py from {os.path.relpath(base, REPO)} and "
                           f"config/examples/evaluate.yaml.\n" + yaml.safe_dump(config, sort_keys=False))
    print(f"evaluating {weights} ({args.layout}) as {name} on {', '.join(tracks)}; base {os.path.relpath(base, REPO)};"
          f" config and results in {os.path.relpath(workdir, REPO)}", flush=True)
    command = [sys.executable, "-m", "snakemake", *[path for paths in targets.values() for path in paths],
               "--profile", "profiles/local", "--cores", args.cores, "--directory", str(workdir),
               "--configfile", str(config_path)]  # targets first: --configfile takes every argument after it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    if subprocess.run(command, cwd=REPO, env=env).returncode != 0:
        return 1
    text = leaderboard_text(name, {track: [str(workdir / path) for path in paths] for track, paths in targets.items()})
    (workdir / "leaderboard.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
