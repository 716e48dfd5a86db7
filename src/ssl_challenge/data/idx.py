"""Reader for the IDX format of (Fashion-)MNIST, gzipped or not.

An IDX file is: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per dimension,
then the data in big-endian order (http://yann.lecun.com/exdb/mnist/).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file, in native byte order; shape from the header (e.g. uint8 [N, 28, 28]).

    Compression is recognised by the content (gzip magic), not the file name, so a decompressed copy that kept
    its ``.gz`` suffix still reads.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: gzip stream is corrupt or truncated ({error})") from error
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file: expected the magic bytes 00 00 <type in "
            f"{sorted(hex(code) for code in IDX_TYPES)}> <ndim>, found {raw[:4].hex(' ') or 'an empty file'}"
        )
    dtype = IDX_TYPES[raw[2]]
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header: {ndim} dimensions need {header_size} bytes, "
                         f"the file has {len(raw)}")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header_size + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(f"{path}: IDX file is {problem}: shape {shape} of {dtype.name} needs {expected} bytes, "
                         f"found {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
