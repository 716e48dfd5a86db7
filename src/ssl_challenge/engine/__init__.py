"""The generic training loop, its schedule, checkpoints and distributed helpers."""
