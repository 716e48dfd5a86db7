"""The fixed cost of one workflow job: what a Snakemake script's process pays besides its work.

The embedded default's `all_tracks` runs about 250 jobs on 2 cores, each a fresh Python process that imports torch,
so a second of fixed cost per job is about two minutes of the run. Two parts, each variant a fresh process, the
variants alternating round after round on the same cores (this machine is noisy: compare within one run):

1. Processes (median of ``--rounds`` starts): `import torch` with Python's normal teardown against the same ending
   with ``jobs.end_process`` (``os._exit`` after flushing, what ``job_logging`` does when a Snakemake job has
   succeeded); building and running the embedded network with its own BasicBlock against also importing
   torchvision (which imports torch._dynamo: what every job that built the network paid until 2026-12-01); and
   creating a torch optimizer, which imports torch._dynamo in any case (``torch._disable_dynamo``).
2. Snakemake: a workflow of ``--jobs`` trivial jobs (each imports torch inside ``job_logging``, as every script
   does), run with ``--cores 2`` with the fast ending and without it (the same script given a stand-in for the
   ``snakemake`` object, so ``job_logging`` does not recognise Snakemake and lets Python tear down).

    PYTHONPATH=src .venv/bin/python benchmarks/job_overhead.py      # ~3 min
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
NETWORK = ("from ssl_challenge.models.backbones import build_backbone\n"
           "build_backbone({'name': 'small_resnet'})(torch.zeros(2, 3, 32, 32))\n")
END = "from ssl_challenge.core.jobs import end_process\nend_process()\n"
PROCESSES = {  # name -> code of one process
    "import torch, normal exit": "import torch\n",
    "import torch, end_process": "import torch\n" + END,
    "embedded network": "import torch\n" + NETWORK + END,
    "embedded network + import torchvision": "import torch, torchvision\n" + NETWORK + END,
    "embedded network + SGD": "import torch\n" + NETWORK + "torch.optim.SGD([torch.zeros(1)], lr=0.1)\n" + END,
}
JOB_SCRIPT = """\
from types import SimpleNamespace

from ssl_challenge.core.jobs import job_logging

job = snakemake
if not snakemake.params.fast:  # a stand-in that job_logging does not take for Snakemake's object
    job = SimpleNamespace(**{name: getattr(snakemake, name)
                             for name in ("threads", "log", "rule", "wildcards", "config", "scriptdir")})
with job_logging(job):
    import torch

    with open(snakemake.output[0], "w") as output:
        output.write(str(torch.ones(1).item()))
"""
SNAKEFILE = """\
rule all:
    input: expand("{variant}/{index}.txt", index=range(JOBS), allow_missing=True)
    output: touch("{variant}/done")

rule job:
    output: "{variant}/{index}.txt"
    log: "{variant}/logs/{index}.log"
    params: fast=lambda wildcards: wildcards.variant == "end_process"
    script: "workflow/scripts/job.py"
"""


def environment() -> dict:
    return dict(os.environ, PYTHONPATH=str(SRC), SLURM_CONF="/dev/null")


def process_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=environment(), check=True)
    return time.perf_counter() - start


def snakemake_seconds(workdir: Path, variant: str, jobs: int) -> float:
    for done in (workdir / variant).glob("*"):
        if done.is_file():
            done.unlink()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", f"{variant}/done", "--cores", "2", "--quiet", "all",
                    "--config", f"JOBS={jobs}"], cwd=workdir, env=environment(), check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="process starts per variant")
    parser.add_argument("--jobs", type=int, default=24, help="jobs per Snakemake run")
    parser.add_argument("--snakemake-rounds", type=int, default=2)
    args = parser.parse_args()

    times = {name: [] for name in PROCESSES}
    for _ in range(args.rounds):
        for name, code in PROCESSES.items():
            times[name].append(process_seconds(code))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"one process, median of {args.rounds} (s):")
    for name, seconds in median.items():
        print(f"  {name:40s} {seconds:6.3f}")
    teardown = median["import torch, normal exit"] - median["import torch, end_process"]
    torchvision = median["embedded network + import torchvision"] - median["embedded network"]
    optimizer = median["embedded network + SGD"] - median["embedded network"]
    print(f"  Python's teardown after torch: {teardown:.3f} s; importing torchvision: {torchvision:.3f} s; "
          f"a first optimizer (torch._dynamo): {optimizer:.3f} s")

    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        (workdir / "workflow" / "scripts").mkdir(parents=True)
        (workdir / "workflow" / "scripts" / "job.py").write_text(JOB_SCRIPT)
        (workdir / "Snakefile").write_text("JOBS = int(config['JOBS'])\n" + textwrap.dedent(SNAKEFILE))
        runs = {"python_teardown": [], "end_process": []}
        for _ in range(args.snakemake_rounds):
            for variant in runs:
                runs[variant].append(snakemake_seconds(workdir, variant, args.jobs))
    best = {variant: min(values) for variant, values in runs.items()}
    print(f"Snakemake, {args.jobs} jobs on 2 cores, best of {args.snakemake_rounds} (s): "
          f"Python's teardown {best['python_teardown']:.1f}, end_process {best['end_process']:.1f}: "
          f"{best['end_process'] / best['python_teardown']:.2f}x, "
          f"{(best['python_teardown'] - best['end_process']) / args.jobs:.3f} s of wall time per job")


if __name__ == "__main__":
    main()
