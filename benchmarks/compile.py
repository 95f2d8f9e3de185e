"""Gather benchmarks/results/*.md into docs/benchmarks.md (each result file holds its machine and date)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["phantom", "spect_projector", "osem", "ct", "mar", "render", "demo"]


def main() -> None:
    results = ROOT / "benchmarks" / "results"
    files = sorted(results.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    parts = [
        "# Benchmarks\n",
        "Measured, not estimated: each section names its machine, date, sizes and, where a peer exists, the peer's\n"
        "time on the same machine in the same run. Regenerate a section with its script in `benchmarks/`, then\n"
        "`python benchmarks/compile.py`.\n",
    ]
    for f in files:
        parts.append(f.read_text().strip() + "\n")
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
