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


@pytest.fixture
def cuda_settings_restored(monkeypatch):
    """The global flags configure_cuda changes, put back afterwards (the test process must not stay in them)."""
    import warnings

    monkeypatch.setattr(os, "environ", {name: value for name, value in os.environ.items()
                                        if name != "CUBLAS_WORKSPACE_CONFIG"} | {numerics.DETERMINISTIC_VARIABLE: "1"})
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.mkldnn.enabled, warnings.showwarning, list(warnings.filters))
    monkeypatch.setattr(numerics, "_cuda_device", None)
    monkeypatch.setattr(numerics, "_nondeterministic_operations", [])
    yield
    (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, algorithms, warn_only,
     torch.backends.mkldnn.enabled, warnings.showwarning, warnings.filters[:]) = saved
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)


def test_configure_cuda_sets_deterministic_gpu_numerics_and_records_them(cuda_settings_restored):
    from torch._prims_common import alert_not_deterministic  # torch's own warn-only alert, message included

    import warnings

    shown = []  # what reaches the warnings' display (the job's log) before and after configure_cuda wraps it
    warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
    torch.backends.cudnn.benchmark = True  # as a user's earlier setting might have left it
    torch.backends.mkldnn.enabled = False  # the CPU side of deterministic mode, as configure_torch leaves it
    record = numerics.configure_cuda(torch.device("cuda", 0), deterministic=True)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert record["cuda"] == {"device": "cuda:0", "cudnn_deterministic": True, "cudnn_benchmark": False,
                              "deterministic_algorithms": True, "deterministic_algorithms_warn_only": True,
                              "cublas_workspace_config": ":4096:8", "nondeterministic_operations": []}
    assert record["deterministic"]
    # An operation without a deterministic CUDA kernel warns (never raises) and is listed once in the record.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a user's filter: the alert is shown all the same
        numerics.configure_cuda(torch.device("cuda", 0), deterministic=True)  # again: wrapped once, not twice
        for _ in range(3):  # as in a training loop: shown once for its place of call
            alert_not_deterministic("scatter_add_cuda_kernel")
    assert len(shown) == 1 and shown[0].startswith("scatter_add_cuda_kernel does not have a deterministic")
    record = numerics.numerics_record()
    assert record["cuda"]["nondeterministic_operations"] == ["scatter_add_cuda_kernel"]
    assert not record["deterministic"]
    # Deterministic mode off: the flags are off again.
    record = numerics.configure_cuda("cuda", deterministic=False)
    assert not torch.backends.cudnn.deterministic and not torch.are_deterministic_algorithms_enabled()
    assert not record["cuda"]["deterministic_algorithms"] and not record["deterministic"]


def test_configure_cuda_changes_nothing_on_the_cpu(cuda_settings_restored):
    record = numerics.configure_cuda(torch.device("cpu"), deterministic=True)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and "cuda" not in record


def test_job_logging_pins_cublas_workspace_without_recording_it_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", {name: value for name, value in os.environ.items()
                                        if name != "CUBLAS_WORKSPACE_CONFIG"})
    with job_logging(fake_job(tmp_path, {"resources": {"deterministic": True}})):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # before torch's first CUDA call
        assert "CUBLAS_WORKSPACE_CONFIG" not in numerics.numerics_record()["environment"]


CUDA_JOB = """
import hashlib, json
from ssl_challenge.core.numerics import pin_environment
pin_environment(1, deterministic=True)  # as job_logging does, before torch loads
import torch
from ssl_challenge.core.devices import select_device
from ssl_challenge.core.numerics import numerics_record, start_numerics

start_numerics(1)
device = select_device()


def trained_digest():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(256, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    labels = torch.arange(256).remainder(10).to(device)
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.sha256()
    for value in net.state_dict().values():
        digest.update(value.cpu().numpy().tobytes())
    return digest.hexdigest()


first, second = trained_digest(), trained_digest()
before = numerics_record()
# Operations torch documents as without a deterministic CUDA kernel: warned about, never raised.
torch.nn.functional.avg_pool3d(torch.rand(1, 1, 4, 4, 4, device=device, requires_grad=True), 2).sum().backward()
torch.histc(torch.rand(100, device=device))
print(json.dumps({"first": first, "second": second, "before": before, "after": numerics_record()}))
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_deterministic_mode_repeats_training_and_lists_warned_operations():
    env = {key: value for key, value in os.environ.items()
           if key not in numerics.RECORDED_VARIABLES + (numerics.DETERMINISTIC_VARIABLE, "CUBLAS_WORKSPACE_CONFIG")}
    result = subprocess.run([sys.executable, "-c", CUDA_JOB], env=env | {"PYTHONPATH": str(SRC)},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["first"] == found["second"]  # two trainings, the same bytes
    cuda = found["before"]["cuda"]
    assert cuda["cudnn_deterministic"] and not cuda["cudnn_benchmark"] and cuda["deterministic_algorithms"]
    assert cuda["cublas_workspace_config"] == ":4096:8" and found["before"]["deterministic"]
    assert found["after"]["cuda"]["nondeterministic_operations"] and not found["after"]["deterministic"]
    assert "does not have a deterministic implementation" in result.stderr  # shown in the job's log too
