"""The one place a job picks its device; library functions receive the device as an argument."""
from __future__ import annotations

from .numerics import configure_cuda


def select_device():
    """CUDA when this process sees a GPU, else the CPU (torch is imported here, not at module load). A GPU is set
    up for the run's numerics (:func:`.numerics.configure_cuda`) before anything runs on it."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    configure_cuda(device)
    return device
