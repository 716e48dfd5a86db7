"""Atomic file output: write to a temporary name beside the target, then rename; the one safe reader of files
written with ``torch.save``; and what every format's reader shares to read ``.npz`` and JSON files.

A killed job never leaves a file that looks complete, because ``os.replace`` is atomic on POSIX file systems.
Outputs get the permissions of any file the user creates (``0666`` minus the umask), so a group can share a
results tree. A write that fails for lack of space names the file and says so. A file whose bytes are not a whole
file of its format (a copy cut short, a disk that filled up under another writer) raises :class:`CorruptFileError`
naming it and what writes it, whatever its format.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import tokenize
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

# errno values of a write that ran out of room: the disk, the user's quota, or a file-size limit (ulimit -f).
OUT_OF_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# torch.save reports a short write as a RuntimeError of its zip writer, never as an OSError with an errno.
TORCH_WRITE_FAILURE_MARKERS = ("unexpected pos", "file write failed", "PytorchStreamWriter")


class OutputWriteError(OSError):
    """Writing an output failed part-way (typically a full disk); the message names the file. Nothing was left
    at the target path."""


class ModelFileError(ValueError):
    """A readable ``.pth`` file that is not what the pipeline writes: not a plain dict of tensors and plain values
    (it would run code when unpickled), or lacking the expected entries. The message names the file. (A truncated or
    damaged one raises :class:`CorruptFileError`.)"""


class CorruptFileError(ValueError):
    """A file of any of the pipeline's formats (feature, label, score, result, samples, model, checkpoint) is
    truncated or damaged: its bytes are not a whole file of that format. Raised by the format's one reader, made by
    :func:`corrupt_file_error`: the message names the file, what writes it and what to do (usually: delete it and
    rerun the workflow, which writes it again)."""


# What a reader lets through as it is: the file is absent or not ours to read, or memory ran out. Anything else
# raised while parsing a file's bytes means they are not a whole file of the format (what numpy, zipfile and json
# raise for damaged bytes varies with where the damage falls: BadZipFile, ValueError, EOFError, KeyError,
# NotImplementedError, RuntimeError, tokenize.TokenError, OSError(EINVAL) of a seek, ...).
NOT_CORRUPTION = (FileNotFoundError, PermissionError, IsADirectoryError, MemoryError)
DAMAGED_BYTES_ERRORS = (zipfile.BadZipFile, ValueError, EOFError, KeyError, IndexError, NotImplementedError,
                        RuntimeError, SyntaxError, tokenize.TokenError, OverflowError, OSError)
REWRITE = "Delete it and rerun the workflow, which writes it again."


def corrupt_file_error(path: str | os.PathLike, error: BaseException, writer: str | None = None,
                       expected: str | None = None, remedy: str | None = None,
                       problem: str = "unreadable, truncated or corrupt") -> CorruptFileError:
    """The :class:`CorruptFileError` of ``path``, whose reading raised ``error``: it names the file, the
    ``problem``, the error's first line, ``writer`` (what writes the file: a function and its rules; None for a file
    the user supplies), ``expected`` (what the file should be) and ``remedy`` (by default: delete it and rerun the
    workflow, or, for a file the user supplies, replace it)."""
    detail = str(error).splitlines()[0] if str(error) else "no detail"
    written = f"; it is written by {writer}" if writer else ""
    wanted = f"; expected {expected}" if expected else ""
    if remedy is None:
        remedy = REWRITE if writer else "Replace it with a complete copy."
    return CorruptFileError(f"{path}: {problem} ({type(error).__name__}: {detail})"
                            f"{written}{wanted}. {remedy}".rstrip())


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


def load_torch_file(path: str | os.PathLike, expected: str, remedy: str, writer: str | None = None) -> Any:
    """The content of a file written by :func:`torch_save_atomic`, loaded with ``weights_only=True``: only
    tensors and plain containers/values are accepted, so a planted file cannot run code.

    ``expected`` says what the file should be, ``writer`` what writes it (None for a file the user supplies, which
    may be in torch's legacy format) and ``remedy`` what to do about a bad one; they go into the
    :class:`ModelFileError` (a file holding other objects) or :class:`CorruptFileError` (a truncated or damaged
    file) raised.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {expected}")
    if writer is not None:
        # torch.save writes a zip archive. Without its directory (a cut copy) or its header (garbage), torch falls
        # back to the legacy pickle reader, whose refusal of unknown bytes would read as a planted payload.
        try:
            whole = zipfile.is_zipfile(path)
        except zipfile.BadZipFile as error:  # a damaged directory record
            raise corrupt_file_error(path, error, writer, expected, remedy) from error
        if not whole:
            raise corrupt_file_error(path, zipfile.BadZipFile("not a zip archive, which torch.save writes"),
                                     writer, expected, remedy)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported operand" in str(error):  # a byte that is no pickle opcode: damaged, not planted
            raise corrupt_file_error(path, error.__context__ or error, writer, expected, remedy) from error
        # torch's message is long and suggests ways to load it unsafely; keep only the name of the object.
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        detail = f" (it calls {found.group(1)})" if found else ""
        raise ModelFileError(f"{path}: refused: it holds objects other than tensors and plain values, and "
                             f"loading it could run code{detail}; expected {expected}. {remedy}") from error
    except NOT_CORRUPTION:
        raise
    # What torch raises for a cut or damaged file varies with where the cut falls (zip directory missing, a seek
    # past the end, an empty pickle): all of them mean the bytes are not a complete file.
    except DAMAGED_BYTES_ERRORS as error:
        raise corrupt_file_error(path, error, writer, expected, remedy) from error


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


def config_digest(config: dict) -> str:
    """12 hex digits of the SHA-256 of ``config`` (plain JSON values) as sorted JSON: a pretraining run folder's
    name, and the configuration a training checkpoint belongs to."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def read_npz(path: str | os.PathLike, writer: str, names: Iterable[str] | None = None,
             check: Callable[[list[str]], None] | None = None) -> dict[str, Any]:
    """The arrays ``names`` (every array when None) of an ``.npz`` file written with ``np.savez``, as a dict in the
    order asked; pickled (object) arrays are refused. ``check(member names)`` runs before any array is read (to
    refuse a file of another format, or a missing name, with the caller's own error); a name still missing after it
    means a damaged file.

    A missing file raises FileNotFoundError naming it; bytes that are not a whole ``.npz`` (a truncated copy, a
    damaged member) raise :class:`CorruptFileError` naming the file and ``writer``.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; it is written by {writer}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):
            raise ValueError("a single .npy array, not an .npz archive")
    except NOT_CORRUPTION:
        raise
    except DAMAGED_BYTES_ERRORS as error:
        raise corrupt_file_error(path, error, writer) from error
    with archive:
        if check is not None:
            check(list(archive.files))
        names = list(archive.files if names is None else names)
        absent = [name for name in names if name not in archive.files]
        if absent:
            raise corrupt_file_error(path, ValueError(f"no array(s) {absent}; it has {archive.files}"), writer)
        try:
            return {name: archive[name] for name in names}
        except NOT_CORRUPTION:
            raise
        except DAMAGED_BYTES_ERRORS as error:
            raise corrupt_file_error(path, error, writer) from error


def parse_json_text(path: str | os.PathLike, text: str, writer: str | None) -> Any:
    """``json.loads(text)`` of text read from ``path``; invalid JSON raises :class:`CorruptFileError` naming the file,
    the line and ``writer``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise corrupt_file_error(f"{path}:{error.lineno}", error, writer,
                                 problem="not valid JSON: truncated or corrupt") from error


def read_json_object(path: str | os.PathLike, missing: str, expected: str, writer: str | None = None) -> dict:
    """The JSON object in ``path``. A missing file raises FileNotFoundError(``missing``); a file that is not valid
    JSON (truncated, damaged) raises :class:`CorruptFileError` naming the file, the line and ``writer`` (what writes
    it; None for a file the user supplies); anything but an object names the file and ``expected`` (its shape, for
    the message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing)
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise corrupt_file_error(path, error, writer) from error
    data = parse_json_text(path, text, writer)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {expected}")
    return data
