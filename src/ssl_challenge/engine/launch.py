"""Starting the training processes: torchrun on one node, or on several nodes of a SLURM job.

One node: ``torchrun --standalone --nproc-per-node=P <worker>``. Several nodes: ``srun`` starts one task per node
(:func:`srun_argv`), and each task, ``python -m ssl_challenge.engine.launch --nproc-per-node=P -- <worker>``,
replaces itself with torchrun joined to a c10d rendezvous on the step's first node (:func:`torchrun_argv`, from
SLURM's variables). Every process then finds RANK/WORLD_SIZE/LOCAL_RANK as on one node
(``distributed.init_from_environment``).

The argv are pure functions of their arguments and of an environment mapping (unit-tested without SLURM); this
module imports neither torch nor anything above the engine (the worker, ``pretraining``, is named by the caller).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Mapping, Sequence

RENDEZVOUS_PORT = 29500  # torchrun's default; MASTER_PORT in the environment overrides it


class LaunchError(RuntimeError):
    """The environment does not describe the multi-node launch asked for."""


def first_hostname(nodelist: str) -> str:
    """The first host of a SLURM node list: ``"gpu[007-009,012],login1"`` -> ``"gpu007"`` (zero padding kept),
    ``"node3,node4"`` -> ``"node3"``."""
    depth, end = 0, len(nodelist)
    for position, character in enumerate(nodelist):  # the first entry ends at a comma outside brackets
        depth += {"[": 1, "]": -1}.get(character, 0)
        if character == "," and depth == 0:
            end = position
            break
    entry = nodelist[:end].strip()
    if not entry:
        raise LaunchError(f"SLURM node list {nodelist!r} names no host")
    if "[" not in entry:
        return entry
    prefix, rest = entry.split("[", 1)
    ranges, suffix = rest.split("]", 1)
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first + first_hostname(suffix) if "[" in suffix else prefix + first + suffix


def torchrun_argv(processes_per_node: int, worker_argv: Sequence[str], env: Mapping[str, str],
                  python: str = sys.executable) -> list[str]:
    """torchrun for this node: standalone when ``env`` describes no multi-node SLURM step (``SLURM_NNODES``
    absent or 1), else one node of ``SLURM_NNODES`` meeting at the first host of the step's node list
    (``SLURM_STEP_NODELIST``, else ``SLURM_JOB_NODELIST``), port ``MASTER_PORT`` or 29500, rendezvous id the
    job id (the same for the nodes of one job, another for the next attempt)."""
    if processes_per_node < 1:
        raise LaunchError(f"processes per node must be >= 1, got {processes_per_node}")
    launcher = [python, "-m", "torch.distributed.run", f"--nproc-per-node={processes_per_node}"]
    nodes = int(env.get("SLURM_NNODES", "1") or 1)
    if nodes <= 1:
        return launcher[:3] + ["--standalone"] + launcher[3:] + list(worker_argv)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not nodelist or not job:
        raise LaunchError(f"SLURM_NNODES={nodes} but SLURM_STEP_NODELIST/SLURM_JOB_NODELIST or SLURM_JOB_ID is "
                          "missing: start this through srun inside a SLURM job (see srun_argv)")
    endpoint = f"{first_hostname(nodelist)}:{env.get('MASTER_PORT') or RENDEZVOUS_PORT}"
    return launcher + [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                       f"--rdzv-id={job}"] + list(worker_argv)


def srun_argv(nodes: int, processes_per_node: int, worker_argv: Sequence[str], gpus: bool,
              python: str = sys.executable) -> list[str]:
    """srun for a job of ``nodes`` nodes: one task per node running :func:`main`, which starts torchrun there.
    ``--overlap``: Snakemake's SLURM executor already runs the rule inside a job step that holds the first
    node's CPUs; ``--kill-on-bad-exit``: one failed node stops the others instead of leaving them waiting at a
    collective."""
    if nodes < 2:
        raise LaunchError(f"srun_argv is for several nodes, got {nodes} (one node: torchrun_argv)")
    command = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--overlap",
               "--kill-on-bad-exit=1"]
    if gpus:
        command.append(f"--gpus-per-node={processes_per_node}")
    return command + [python, "-m", "ssl_challenge.engine.launch", f"--nproc-per-node={processes_per_node}", "--",
                      *worker_argv]


def main(argv: Sequence[str] | None = None) -> None:
    """One node's launcher (run by srun): replace this process with torchrun for this node."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc-per-node", type=int, required=True)
    parser.add_argument("worker", nargs=argparse.REMAINDER, help="-- then the worker's torchrun arguments")
    args = parser.parse_args(argv)
    worker = args.worker[1:] if args.worker[:1] == ["--"] else args.worker
    command = torchrun_argv(args.nproc_per_node, worker, os.environ)
    print("launching " + " ".join(command), flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
