"""Torch-free planning that the rules read at DAG-build time: which jobs exist and what they are called, the
checks across config keys, and the seeds study's per-seed configs."""
