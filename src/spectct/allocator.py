"""Heap settings for the large, short-lived tensors of CPU reconstruction (glibc on Linux).

PyTorch's CPU tensors come from ``malloc``. glibc serves blocks above its mmap threshold (adaptive, capped at
32 MiB) with a fresh ``mmap`` and unmaps them on ``free``, so a tensor of that size allocated again right
after costs one page fault per 4 KiB, and under CPU contention those faults dominate. One OSEM subset of a
128³ study allocates several 64-MiB volume stacks: measured on a 2-core machine under load, 4.1 million minor
page faults and 12.7 s per iteration with glibc's defaults, 0.9 million and 1.0 s per iteration inside
:func:`reuse_freed_memory` (benchmarks/results/osem.md). The PyTorch performance tuning guide recommends the
same cure in another form (jemalloc or tcmalloc, which keep freed memory for reuse).

The setting is scoped to a block (OSEM's iterations), where the working set is small and steady; outside it
glibc's defaults hold, so the 1-mm CT stages, whose big volumes come and go, keep returning memory at once.
``SPECTCT_MALLOC=default`` in the environment switches it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import torch

__all__ = ["reuse_freed_memory", "trim"]

#: mallopt parameters (glibc malloc.h) and glibc's defaults for them
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: free memory at the top of the heap kept for reuse inside the block (MiB)
KEEP_MB = 1024
_depth = 0


def _libc():
    if not sys.platform.startswith("linux") or os.environ.get("SPECTCT_MALLOC", "").lower() == "default":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def reuse_freed_memory(device: str | torch.device = "cpu") -> Iterator[bool]:
    """Within the block, serve every CPU allocation from the heap and keep up to :data:`KEEP_MB` of freed
    memory for reuse; afterwards restore glibc's defaults and return the free heap to the system.

    Yields whether the setting took effect (glibc, a CPU device, not switched off). Re-entrant.
    """
    global _depth
    libc = _libc() if torch.device(device).type == "cpu" else None
    if libc is None:
        yield False
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, KEEP_MB << 20)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def trim() -> None:
    """Return the free heap memory to the system (between pipeline stages)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
