"""Deterministic numerics: 1 and 2 threads give the same bytes; BatchNorm1d by hand; job_logging's pins."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ssl_challenge.core import numerics
from ssl_challenge.core.jobs import job_logging
from ssl_challenge.models.necks import BatchNorm1d

WORKER = Path(__file__).with_name("numerics_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def run_worker(threads: int, *extra: str, **variables: str) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in numerics.RECORDED_VARIABLES + (numerics.DETERMINISTIC_VARIABLE,)}
    env.update(variables, PYTHONPATH=str(SRC))
    result = subprocess.run([sys.executable, str(WORKER), str(threads), *extra], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_one_and_two_threads_give_identical_bytes_in_every_stage():
    # Without deterministic mode (oneDNN, MKL's default code path) PCA and all three trainings differ here.
    one, two = run_worker(1), run_worker(2)
    assert one["numerics"]["torch_threads"] == 1 and two["numerics"]["torch_threads"] == 2
    for record in (one["numerics"], two["numerics"]):
        assert record["deterministic"] and not record["onednn_enabled"]
        assert record["environment"]["MKL_CBWR"] == "AVX2,STRICT"
    # PCA, k-means, BatchNorm1d, the linear probe, and ROT / DC / ODC training (weights after 2 epochs).
    assert set(one["digests"]) == {"pca", "kmeans", "batchnorm1d", "probe", "rot", "dc", "odc"}
    assert one["digests"] == two["digests"]
    # Another CPU, simulated: MKL and oneDNN limited to AVX2 (this machine has AVX-512); oneDNN is off anyway.
    avx2 = run_worker(1, MKL_ENABLE_INSTRUCTIONS="AVX2", ONEDNN_MAX_CPU_ISA="AVX2")
    assert avx2["digests"] == one["digests"]


def test_batch_norm_1d_matches_hand_computed_statistics():
    norm = BatchNorm1d(2, affine=False, momentum=0.1)
    rows = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    output = norm(rows)
    # Column 0: mean 2, biased variance 1; column 1: mean 2, biased variance 4.
    expected = torch.tensor([[-1.0 / (1 + 1e-5) ** 0.5, -2.0 / (4 + 1e-5) ** 0.5],
                             [1.0 / (1 + 1e-5) ** 0.5, 2.0 / (4 + 1e-5) ** 0.5]])
    torch.testing.assert_close(output, expected)
    # Running statistics: 0.9 * initial + 0.1 * batch (unbiased variance 2 and 8).
    torch.testing.assert_close(norm.running_mean, torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(norm.running_var, torch.tensor([0.9 + 0.2, 0.9 + 0.8]))
    assert int(norm.num_batches_tracked) == 1
    norm.eval()  # evaluation uses the running statistics, as nn.BatchNorm1d does
    torch.testing.assert_close(norm(rows), (rows - norm.running_mean) / (norm.running_var + 1e-5).sqrt())


def test_batch_norm_1d_agrees_with_torch_and_shares_its_state_dict():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(64, 8, generator=generator, dtype=torch.float64)
    for affine, momentum in ((True, 0.1), (False, None)):
        ours, reference = BatchNorm1d(8, affine=affine, momentum=momentum).double(), \
            nn.BatchNorm1d(8, affine=affine, momentum=momentum).double()
        ours.load_state_dict(reference.state_dict())
        for step in range(2):
            a, b = rows.clone().requires_grad_(), rows.clone().requires_grad_()
            (ours(a) * rows).sum().backward()
            (reference(b) * rows).sum().backward()
            torch.testing.assert_close(a.grad, b.grad)
        assert ours.state_dict().keys() == reference.state_dict().keys()
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(value, reference.state_dict()[key], msg=key)
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm1d(3)(torch.ones(1, 3))


def test_configure_torch_turns_onednn_off_only_in_deterministic_mode():
    threads, enabled = torch.get_num_threads(), torch.backends.mkldnn.enabled
    try:
        record = numerics.configure_torch(1, deterministic=True)
        assert not torch.backends.mkldnn.enabled and record["torch_threads"] == 1
        numerics.configure_torch(1, deterministic=False)
        assert torch.backends.mkldnn.enabled
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = enabled


def fake_job(tmp_path, config):
    return SimpleNamespace(threads=2, log=[str(tmp_path / "job.log")], rule="some_rule", wildcards={},
                           config=config)


@pytest.mark.parametrize("deterministic", [True, False])
def test_job_logging_pins_the_environment_from_the_config(tmp_path, monkeypatch, deterministic):
    environment = {name: value for name, value in os.environ.items()
                   if name not in numerics.RECORDED_VARIABLES + (numerics.DETERMINISTIC_VARIABLE,)}
    monkeypatch.setattr(os, "environ", environment | {"OPENBLAS_CORETYPE": "Zen"})  # a value the user set wins
    with job_logging(fake_job(tmp_path, {"resources": {"deterministic": deterministic}})):
        assert os.environ["OMP_NUM_THREADS"] == "2" and os.environ["MKL_NUM_THREADS"] == "2"
        assert os.environ[numerics.DETERMINISTIC_VARIABLE] == ("1" if deterministic else "0")
        assert numerics.deterministic_requested() is deterministic
        assert os.environ.get("MKL_CBWR") == ("AVX2,STRICT" if deterministic else None)
        assert os.environ["OPENBLAS_CORETYPE"] == "Zen"
    assert "numerics:" in (tmp_path / "job.log").read_text()


def test_job_logging_refuses_a_non_boolean_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    with pytest.raises(ValueError, match="resources.deterministic"):
        with job_logging(fake_job(tmp_path, {"resources": {"deterministic": "yes"}})):
            pass
