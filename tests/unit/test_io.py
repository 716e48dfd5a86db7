from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Payload
from ssl_challenge.core.io import (CorruptFileError, ModelFileError, append_jsonl, atomic_path, load_torch_file,
                              read_jsonl, write_json_atomic)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            assert tmp.suffix == ".npz"
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_the_target(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_jsonl_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iteration": 1})
    append_jsonl(path, {"iteration": 2})
    with path.open("a") as handle:
        handle.write('{"iteration": 3, "lo')
    assert read_jsonl(path) == [{"iteration": 1}, {"iteration": 2}]


# ------------------------------------------------------------------------------------------------ permissions
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_keep_the_users_umask(tmp_path, umask):
    import numpy as np
    import torch

    from ssl_challenge.core.io import torch_save_atomic

    previous = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
        torch_save_atomic({"w": torch.ones(2)}, tmp_path / "model.pth")
        with atomic_path(tmp_path / "features.npz") as temporary:
            np.savez(temporary, x=np.zeros(3))
    finally:
        os.umask(previous)
    for name in ("result.json", "model.pth", "features.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


# ------------------------------------------------------------------------------------------------ full disk
FULL_DISK_SCRIPT = """
import resource, signal, sys
import torch
from ssl_challenge.core.io import OutputWriteError, torch_save_atomic, write_json_atomic

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
folder = sys.argv[1]
for name, write in [("model.pth", lambda path: torch_save_atomic({"w": torch.ones(100_000)}, path)),
                    ("result.json", lambda path: write_json_atomic(path, list(range(100_000))))]:
    try:
        write(f"{folder}/{name}")
    except OutputWriteError as error:
        print("REFUSED", error)
    else:
        print("WRITTEN", name)
"""


def test_a_full_disk_names_the_path_and_leaves_no_file(tmp_path):
    # The targets exist from an earlier run: a failed write must leave them as they were.
    (tmp_path / "model.pth").write_text("earlier model")
    (tmp_path / "result.json").write_text("earlier result")
    result = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src")), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    refused = [line for line in result.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 2, result.stdout
    for line, name in zip(refused, ("model.pth", "result.json")):
        assert f"{tmp_path}/{name}: writing failed" in line and "the disk may be full" in line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pth", "result.json"]  # no temporary left
    assert (tmp_path / "model.pth").read_text() == "earlier model"
    assert (tmp_path / "result.json").read_text() == "earlier result"


# ------------------------------------------------------------------------------------------------ safe loading
def test_a_planted_payload_is_refused_before_it_runs(tmp_path):
    import torch

    marker, path = tmp_path / "marker", tmp_path / "planted.pth"
    torch.save({"backbone": {"w": torch.ones(2)}, "extra": Payload(marker)}, path)
    with pytest.raises(ModelFileError, match=f"{path}: refused: it holds objects other than tensors") as error:
        load_torch_file(path, "a model file", "Delete it.")
    assert "(it calls exec)" in str(error.value) and "expected a model file. Delete it." in str(error.value)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: the payload is live, an unsafe load runs it
    assert marker.read_text() == "the payload ran"


def test_truncated_and_foreign_files_are_named_corrupt(tmp_path):
    import torch

    path = tmp_path / "state.pth"
    torch.save({"w": torch.ones(10_000)}, path)
    assert torch.equal(load_torch_file(path, "a state", "")["w"], torch.ones(10_000))
    path.write_bytes(path.read_bytes()[:20_000])
    with pytest.raises(CorruptFileError, match=f"{path}: unreadable, truncated or corrupt .*expected a state. Redo"):
        load_torch_file(path, "a state", "Redo.")
    path.write_bytes(b"")
    with pytest.raises(CorruptFileError, match="truncated"):
        load_torch_file(path, "a state", "Redo.")
    with pytest.raises(FileNotFoundError, match="missing.pth: not found; expected a state"):
        load_torch_file(tmp_path / "missing.pth", "a state", "Redo.")
