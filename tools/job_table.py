"""The full-scale run's jobs per rule and what each asks of the cluster, from a dry run of config/challenge.yaml
under the cluster profile (profiles/slurm/config.yaml), as the table "Jobs and requests" of profiles/README.md.

The dry run needs data roots that pass the layout checks: the config's own roots are replaced by a small miniature
tree (ssl_challenge.data.miniature) built in a temporary folder; nothing else of config/challenge.yaml changes, so
the jobs are those of the full-scale run.

    .venv/bin/python tools/job_table.py            # print the table
    .venv/bin/python tools/job_table.py --update   # rewrite it in profiles/README.md, between its two markers
    .venv/bin/python tools/job_table.py --check    # exit 1 when that table is out of date (tests run this)
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ssl_challenge.data.miniature import build_miniature  # noqa: E402

README = REPO / "profiles" / "README.md"
START, END = "<!-- job-table:start -->", "<!-- job-table:end -->"
# The stages in the order they run; rules not listed follow.
RULE_ORDER = ["pretrain", "snapshot_model", "pseudo_labels", "codc_labels", "codc_round", "extract_voc07_features",
              "extract_places205_features", "concat_voc07_features", "concat_places205_features", "svm_full",
              "lowshot_samples", "svm_lowshot", "merge_lowshot", "linear_probe", "imagenet_linear", "leaderboard",
              "dc_vs_odc", "ablation_tables"]
TINY = {"imagenet_train": 10, "imagenet_val": 10, "voc_trainval": 60, "voc_test": 20, "places_train": 10,
        "places_val": 10}


def dry_run_output(fashion_mnist_dir: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        build_miniature(fashion_mnist_dir, scratch / "data", sizes=TINY)
        config = yaml.safe_load((REPO / "config" / "challenge.yaml").read_text())
        config["data"].update(imagenet_root=str(scratch / "data" / "imagenet"),
                              voc07_root=str(scratch / "data" / "VOCdevkit"),
                              places205_root=str(scratch / "data" / "places205"))
        (scratch / "challenge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", str(scratch), "--profile", str(REPO / "profiles" / "slurm"), "--dry-run",
                   "--cores", "1024", "all_tracks", "--configfile", str(scratch / "challenge.yaml")]
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), SLURM_CONF=os.environ.get("SLURM_CONF", "/dev/null"))
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise SystemExit(f"the dry run failed:\n{(result.stdout + result.stderr)[-4000:]}")
        return result.stdout + result.stderr


def local_rules() -> set[str]:
    """The Snakefile's `localrules:` (a dry run does not mark them): run by Snakemake itself, never submitted."""
    block = re.search(r"^localrules:\n((?:[ \t]+\w+,?\n)+)", (REPO / "Snakefile").read_text(), flags=re.MULTILINE)
    return set(re.findall(r"\w+", block.group(1))) if block else set()


def requests_per_rule(output: str) -> dict[str, dict]:
    """``{rule: {"jobs": n, "local": bool, "resources": {name: set of values}}}`` from a dry run's job blocks,
    in the order of RULE_ORDER."""
    rules = defaultdict(lambda: {"jobs": 0, "local": False, "resources": defaultdict(set)})
    local = local_rules()
    for block in re.split(r"^(?=(?:local)?rule \w+:)", output, flags=re.MULTILINE):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if not header:
            continue
        entry = rules[header.group(1)]
        entry["jobs"] += 1
        entry["local"] = header.group(1) in local
        line = re.search(r"^\s*resources: (.*)$", block, flags=re.MULTILINE)
        for item in line.group(1).split(", ") if line else []:
            name, value = item.split("=", 1)
            entry["resources"][name].add(value)
    order = {rule: index for index, rule in enumerate(RULE_ORDER)}
    return dict(sorted(rules.items(), key=lambda item: order.get(item[0], len(order))))


def describe(values: set, unit: float = 1.0, suffix: str = "") -> str:
    numbers = sorted({float(value) / unit for value in values})
    return " / ".join(f"{number:g}{suffix}" for number in numbers) if numbers else "-"


def markdown_table(rules: dict[str, dict]) -> str:
    lines = ["| rule | jobs | GPUs per job | CPUs per job | memory per job | time limit (first try) |",
             "|---|---:|---:|---:|---:|---:|"]
    total = 0
    for rule, entry in rules.items():
        if rule == "all_tracks":
            continue
        total += entry["jobs"]
        resources = entry["resources"]
        if entry["local"]:
            lines.append(f"| `{rule}` | {entry['jobs']} | runs where Snakemake runs (a local rule) | | | |")
            continue
        lines.append(f"| `{rule}` | {entry['jobs']} | {describe(resources.get('gpu', {'0'}))} | "
                     f"{describe(resources.get('cpus_per_task', set()))} | "
                     f"{describe(resources.get('mem_mb', set()), 1000, ' GB')} | "
                     f"{describe(resources.get('runtime', set()), 60, ' h')} |")
    lines.append(f"| all | {total} | | | | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the table in profiles/README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the table in profiles/README.md differs")
    parser.add_argument("--fashion-mnist-dir", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    table = markdown_table(requests_per_rule(dry_run_output(args.fashion_mnist_dir)))
    if not (args.update or args.check):
        print(table, end="")
        return
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    updated = f"{head}{START}\n{table}{END}{rest.split(END, 1)[1]}"
    if args.check:
        if updated != text:
            raise SystemExit(f"{README}: the job table is out of date; run tools/job_table.py --update")
        return
    README.write_text(updated)


if __name__ == "__main__":
    main()
