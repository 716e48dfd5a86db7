"""The torchrun command lines: one node (standalone), and one node of a multi-node SLURM job (c10d rendezvous on
the step's first node), built from environment mappings without SLURM; the single-node path runs for real in
tests/unit/test_pretraining.py (two processes through torchrun)."""
import pytest

from ssl_challenge.engine.launch import LaunchError, first_hostname, main, srun_argv, torchrun_argv

WORKER = ["-m", "ssl_challenge.stages.pretraining", "/runs/abc/request.json"]


@pytest.mark.parametrize("nodelist, first", [
    ("gpu[007-009,012],login1", "gpu007"),
    ("node3,node4", "node3"),
    ("n[1-2]-ib[3-4]", "n1-ib3"),
    ("single", "single"),
    ("rack[10,2]", "rack10"),
])
def test_first_hostname_of_slurm_node_lists(nodelist, first):
    assert first_hostname(nodelist) == first


def test_one_node_is_standalone():
    assert torchrun_argv(4, WORKER, env={}, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", *WORKER]
    # a one-node SLURM step is a standalone run too
    assert "--standalone" in torchrun_argv(2, WORKER, env={"SLURM_NNODES": "1", "SLURM_JOB_ID": "7"}, python="py")


def test_several_nodes_meet_at_the_first_node_of_the_step():
    env = {"SLURM_NNODES": "3", "SLURM_STEP_NODELIST": "gpu[04-06]", "SLURM_JOB_NODELIST": "gpu[01-06]",
           "SLURM_JOB_ID": "4242", "SLURM_NODEID": "2"}
    assert torchrun_argv(8, WORKER, env=env, python="py") == [
        "py", "-m", "torch.distributed.run", "--nproc-per-node=8", "--nnodes=3", "--rdzv-backend=c10d",
        "--rdzv-endpoint=gpu04:29500", "--rdzv-id=4242", *WORKER]
    del env["SLURM_STEP_NODELIST"]  # outside a step: the job's node list
    env["MASTER_PORT"] = "31000"
    assert "--rdzv-endpoint=gpu01:31000" in torchrun_argv(8, WORKER, env=env, python="py")


def test_a_multi_node_environment_without_a_node_list_is_refused():
    with pytest.raises(LaunchError, match="SLURM_JOB_NODELIST"):
        torchrun_argv(8, WORKER, env={"SLURM_NNODES": "2", "SLURM_JOB_ID": "1"})
    with pytest.raises(LaunchError, match="processes per node"):
        torchrun_argv(0, WORKER, env={})


def test_srun_starts_one_launcher_per_node():
    assert srun_argv(2, 8, WORKER, gpus=True, python="py") == [
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--overlap", "--kill-on-bad-exit=1",
        "--gpus-per-node=8", "py", "-m", "ssl_challenge.engine.launch", "--nproc-per-node=8", "--", *WORKER]
    assert "--gpus-per-node=8" not in srun_argv(2, 8, WORKER, gpus=False)
    with pytest.raises(LaunchError, match="several nodes"):
        srun_argv(1, 8, WORKER, gpus=True)


def test_the_node_launcher_execs_torchrun_for_its_node(monkeypatch):
    executed = []
    monkeypatch.setattr("os.execv", lambda path, argv: executed.append(argv))
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "a[1-2]")
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    main(["--nproc-per-node=2", "--", *WORKER])
    assert executed[0][3:] == ["--nproc-per-node=2", "--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=a1:29500",
                               "--rdzv-id=9", *WORKER]


def test_the_engine_loads_without_the_methods_and_the_orchestration():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, ssl_challenge.engine.train, ssl_challenge.engine.launch; "
            "print(sorted(m for m in sys.modules if m.startswith('ssl_challenge')))")
    src = Path(__file__).parents[2] / "src"
    loaded = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, check=True).stdout
    assert "ssl_challenge.engine.train" in loaded
    for upper in ("ssl_challenge.methods", "ssl_challenge.stages.pretraining", "ssl_challenge.models"):
        assert f"'{upper}" not in loaded, upper
