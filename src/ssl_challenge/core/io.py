"""Atomic file output: write to a temporary name beside the target, then rename; and the one safe reader of
files written with ``torch.save``.

A killed job never leaves a file that looks complete, because ``os.replace`` is atomic on POSIX file systems.
Outputs get the permissions of any file the user creates (``0666`` minus the umask), so a group can share a
results tree. A write that fails for lack of space names the file and says so.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

# errno values of a write that ran out of room: the disk, the user's quota, or a file-size limit (ulimit -f).
OUT_OF_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# torch.save reports a short write as a RuntimeError of its zip writer, never as an OSError with an errno.
TORCH_WRITE_FAILURE_MARKERS = ("unexpected pos", "file write failed", "PytorchStreamWriter")


class OutputWriteError(OSError):
    """Writing an output failed part-way (typically a full disk); the message names the file. Nothing was left
    at the target path."""


class ModelFileError(ValueError):
    """A ``.pth`` file is not what the pipeline writes: not a plain dict of tensors and plain values (it would run
    code when unpickled), unreadable, or lacking the expected entries. The message names the file."""


class CorruptFileError(ModelFileError):
    """A ``.pth`` file is truncated or damaged (a copy cut short, a disk that filled up under another writer)."""


def _create_temporary(path: Path) -> Path:
    """Create an empty file beside ``path`` with mode ``0666`` minus the umask (as ``open`` would; ``mkstemp``
    makes 0600 files, which a group sharing the results cannot read)."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{path}: could not create a temporary file beside it")


def _out_of_space(path: Path, error: BaseException) -> OutputWriteError:
    return OutputWriteError(f"{path}: writing failed ({error}); the disk may be full (or a quota or file-size "
                            "limit reached): free some space and rerun; nothing was written to this path")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success it is renamed to ``path``.

    The temporary name keeps the target's suffix so that libraries which look at it (numpy, PIL) behave. An
    out-of-space error inside the block becomes :class:`OutputWriteError` naming ``path``; the temporary file is
    removed whatever happens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        except OSError as error:
            if error.errno in OUT_OF_SPACE_ERRNOS and not isinstance(error, OutputWriteError):
                raise _out_of_space(path, error) from error
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    import torch  # imported lazily: this module is also used at DAG-build time

    def save(tmp: Path) -> None:
        try:
            torch.save(obj, tmp)
        except RuntimeError as error:
            if any(marker in str(error) for marker in TORCH_WRITE_FAILURE_MARKERS):
                raise _out_of_space(Path(path), error) from error
            raise

    write_atomic(path, save)


def load_torch_file(path: str | os.PathLike, expected: str, remedy: str) -> Any:
    """The content of a file written by :func:`torch_save_atomic`, loaded with ``weights_only=True``: only
    tensors and plain containers/values are accepted, so a planted file cannot run code.

    ``expected`` says what the file should be and ``remedy`` what to do about a bad one; both go into the
    :class:`ModelFileError` (or :class:`CorruptFileError`) raised for a file that is not such a file.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is long and suggests ways to load it unsafely; keep only the name of the object.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        detail = f" (it calls {found.group(1)})" if found else ""
        raise ModelFileError(f"{path}: refused: it holds objects other than tensors and plain values, and "
                             f"loading it could run code{detail}; expected {expected}. {remedy}") from error
    except PermissionError:
        raise
    # What torch raises for a cut or damaged file varies with where the cut falls (zip directory missing, a seek
    # past the end, an empty pickle): all of them mean the bytes are not a complete file.
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path}: unreadable, truncated or corrupt ({type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else 'no detail'}); expected {expected}. "
                               f"{remedy}") from error


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line (metrics logs). A torn last line is tolerated by :func:`read_jsonl`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
    except OSError as error:
        if error.errno in OUT_OF_SPACE_ERRNOS:
            raise _out_of_space(path, error) from error
        raise


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill: everything before it is intact
            break
    return records


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (16 hex digits) of a file's bytes, read in chunks: run folders and evaluation runs key on it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def read_json_object(path: str | os.PathLike, missing: str, expected: str) -> dict:
    """The JSON object in ``path``. A missing file raises FileNotFoundError(``missing``); invalid JSON names the
    file and line; anything but an object names the file and ``expected`` (its shape, for the message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {expected}")
    return data
