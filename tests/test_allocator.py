"""Heap settings around OSEM: freed large buffers are reused inside the block; off means glibc's defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spectct import allocator

_CODE = (
    "import resource, torch\n"
    "from spectct.allocator import reuse_freed_memory\n"
    "def faults():\n"
    "    x = torch.ones(16 << 20); del x\n"  # one 64-MiB tensor first, then five more
    "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "    for _ in range(5):\n"
    "        x = torch.ones(16 << 20); del x\n"
    "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
    "with reuse_freed_memory('cpu') as on:\n"
    "    inside = [faults() for _ in range(3)][-1]\n"  # glibc settles within a round or two
    "print(on, inside, faults())\n"
)


def _run(env: dict | None = None) -> list[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", _CODE], capture_output=True, text=True, env=full,
                          check=True).stdout.split()


@pytest.mark.skipif(allocator._libc() is None, reason="needs glibc (Linux)")
def test_large_buffers_are_reused_inside_the_block_only():
    on, inside, _ = _run()
    assert on == "True"
    assert int(inside) < 2_000  # five 64-MiB tensors would be 80 000 fresh pages if re-mapped each time
    on, inside, _ = _run({"SPECTCT_MALLOC": "default"})
    assert on == "False" and int(inside) > 40_000


def test_no_glibc_or_a_gpu_means_no_change(monkeypatch):
    with allocator.reuse_freed_memory("meta") as on:
        assert on is False
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    with allocator.reuse_freed_memory("cpu") as on:
        assert on is False
    allocator.trim()  # no error
