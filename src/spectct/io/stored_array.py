"""Read an array stored in an ``.npz`` archive slice by slice, without loading all of it.

A 1-mm CT scan's raw data is 1.5 GB per sinogram; the MAR stage needs a few slices at a time.
:class:`StoredArray` reads the slices asked for straight from the file with ``os.pread`` (no memory map,
so pages that were read do not stay counted in the process's resident memory).  It works for members
``np.savez`` writes (stored, not compressed); :func:`open_member` falls back to a full read for a
compressed member.  The ``.npy`` header is parsed with :mod:`numpy.lib.format`, never unpickled.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["StoredArray", "open_member"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # PKWARE APPNOTE 4.3.7: local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"


class StoredArray:
    """A C-ordered array at byte ``offset`` of ``path``; indexing along axis 0 reads only those slices.

    Supports ``a[i]``, ``a[i:j]`` (any step), ``a[[i, j, …]]`` / integer arrays and boolean masks along
    axis 0, each optionally followed by indices of the other axes; ``np.asarray(a)`` reads all of it.
    """

    def __init__(self, path: str | os.PathLike, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self._slice_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoredArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._slice_bytes

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Slices ``rows`` (integer indices along axis 0, any order) as a new array."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = self.shape[0]
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"index out of range for axis 0 with size {n}")
        rows = np.where(rows < 0, rows + n, rows)
        out = np.empty((rows.size,) + self.shape[1:], dtype=self.dtype)
        flat = out.reshape(rows.size, -1).view(np.uint8)
        with open(self.path, "rb") as fh:
            fd = fh.fileno()
            i = 0
            while i < rows.size:  # one read per run of consecutive slices
                j = i + 1
                while j < rows.size and rows[j] == rows[j - 1] + 1:
                    j += 1
                _read_exact(fd, flat[i:j].reshape(-1), self.offset + int(rows[i]) * self._slice_bytes, self.path)
                i = j
        return out

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(key, (int, np.integer)):
            data = self.read(np.array([int(key)]))[0]
        elif isinstance(key, slice):
            data = self.read(np.arange(self.shape[0])[key])
        else:
            idx = np.asarray(key)
            if idx.dtype == bool:
                if idx.shape != (self.shape[0],):
                    raise IndexError(f"boolean index of shape {idx.shape} does not match axis 0 ({self.shape[0]})")
                idx = np.flatnonzero(idx)
            data = self.read(idx)
        return data[(slice(None),) * (data.ndim - self.ndim + 1) + rest] if rest else data

    def __array__(self, dtype=None, copy=None):
        data = self.read(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype, copy=False)

    def chunks(self, rows_per_chunk: int):
        """Yield ``(start, array)`` over consecutive blocks of ``rows_per_chunk`` slices."""
        for z0 in range(0, self.shape[0], max(1, int(rows_per_chunk))):
            yield z0, self.read(np.arange(z0, min(self.shape[0], z0 + rows_per_chunk)))


def _read_exact(fd: int, buf: np.ndarray, offset: int, path: Path) -> None:
    view = memoryview(buf)
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"{path}: file ends before the stored array does")
        done += got


def open_member(path: str | os.PathLike, name: str) -> StoredArray | np.ndarray:
    """Member ``name`` (without ``.npy``) of the ``.npz`` archive at ``path``: a :class:`StoredArray` when
    it is stored uncompressed in C order, else the array read in full.  Raises ``KeyError`` when absent,
    ``ValueError`` / ``zipfile.BadZipFile`` for a malformed archive."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_MAGIC:
            raise ValueError(f"{path}: bad local header for {name}")
        fh.seek(fields[-2] + fields[-1], os.SEEK_CUR)  # file name and extra field
        version = np.lib.format.read_magic(fh)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = readers[version](fh) if version in readers else ((), False, np.dtype(object))
        start = fh.tell()
    if fortran or len(shape) == 0 or dtype.hasobject:  # unusual layouts: numpy reads them (never pickles)
        with np.load(path, allow_pickle=False) as z:
            return z[name]
    arr = StoredArray(path, start, shape, dtype)
    if start + arr.nbytes > os.path.getsize(path):
        raise ValueError(f"{path}: member {name} is truncated")
    return arr
