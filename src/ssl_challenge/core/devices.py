"""The one place a job picks its device; library functions receive the device as an argument."""
from __future__ import annotations


def select_device():
    """CUDA when this process sees a GPU, else the CPU (torch is imported here, not at module load)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
