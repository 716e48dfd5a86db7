"""Where faiss runs: a GPU when a faiss GPU build sees one and torch has CUDA, else the CPU (a stand-in faiss
module and a mocked torch.cuda stand for the GPU machine)."""
from types import SimpleNamespace

import pytest
import torch

from ssl_challenge.clustering import kmeans as kmeans_module
from ssl_challenge.clustering.kmeans import faiss_gpu_device, kmeans
from ssl_challenge.clustering.pca import compute_device

CPU = torch.device("cpu")


def gpu_faiss(gpus: int = 2):
    return SimpleNamespace(GpuIndexFlatL2=object, get_num_gpus=lambda: gpus)


@pytest.fixture
def cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_a_gpu_build_with_gpus_and_cuda_runs_on_the_gpu(cuda):
    assert faiss_gpu_device(CPU, None, gpu_faiss()) == 1  # CPU features: torch's current GPU (the rank's)
    assert faiss_gpu_device(torch.device("cuda", 3), None, gpu_faiss()) == 3  # the features' own GPU
    assert faiss_gpu_device(torch.device("cuda", 3), False, gpu_faiss()) is None  # asked for the CPU


def test_anything_missing_falls_back_to_the_cpu(monkeypatch, cuda):
    cpu_build = SimpleNamespace(get_num_gpus=lambda: 0)
    assert faiss_gpu_device(CPU, None, cpu_build) is None
    assert faiss_gpu_device(CPU, None, gpu_faiss(gpus=0)) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert faiss_gpu_device(CPU, None, gpu_faiss()) is None


def test_demanding_a_gpu_without_one_names_what_is_missing():
    with pytest.raises(RuntimeError, match="CPU-only build"):
        faiss_gpu_device(CPU, True, SimpleNamespace(get_num_gpus=lambda: 0))


def test_the_installed_cpu_faiss_clusters_on_the_cpu(cuda):
    import faiss

    if hasattr(faiss, "GpuIndexFlatL2"):
        pytest.skip("a faiss GPU build is installed (envs/pipeline-gpu.yaml): this test is about the CPU build")
    # Even where torch claims a GPU (the cuda fixture), a CPU-only faiss build keeps the index on the CPU.
    assert faiss_gpu_device(CPU) is None
    assert type(kmeans_module._flat_index(faiss, 2, CPU, None)) is faiss.IndexFlatL2
    with pytest.raises(RuntimeError, match="CPU-only build"):
        faiss_gpu_device(CPU, True)
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    result = kmeans(points, 2, iterations=5, seed=0, use_gpu=None)
    assert result.assignments[0] == result.assignments[1] != result.assignments[2] == result.assignments[3]


def test_kmeans_builds_a_gpu_index_where_the_selection_says(monkeypatch, cuda):
    made = []

    class FakeGpuIndex:
        def __init__(self, resources, dim, config):
            made.append((dim, config.device))

    fake = SimpleNamespace(GpuIndexFlatL2=FakeGpuIndex, get_num_gpus=lambda: 1, StandardGpuResources=lambda: None,
                           GpuIndexFlatConfig=lambda: SimpleNamespace(device=None))
    assert isinstance(kmeans_module._flat_index(fake, 16, CPU, None), FakeGpuIndex)
    assert made == [(16, 1)]


def test_pca_runs_on_a_gpu_only_when_torch_has_one(monkeypatch):
    assert compute_device(torch.zeros(2, 2)) == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert compute_device(torch.zeros(2, 2)) == torch.device("cuda", 0)


def test_the_gpu_requirements_are_the_cpu_pins_with_faiss_gpu():
    from pathlib import Path

    repo = Path(__file__).parents[2]

    def pins(path):
        lines = (repo / path).read_text().splitlines()
        return {line.split("  #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}

    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert gpu == (cpu - {"faiss-cpu==1.15.1"}) | {"faiss-gpu==1.15.1"}
    conda_cpu = {line.strip() for line in pins("envs/pipeline.yaml") if line.strip().startswith("- ")}
    conda_gpu = {line.strip() for line in pins("envs/pipeline-gpu.yaml") if line.strip().startswith("- ")}
    assert conda_gpu == (conda_cpu - {"- faiss-cpu==1.15.1"}) | {"- faiss-gpu==1.15.1"}
