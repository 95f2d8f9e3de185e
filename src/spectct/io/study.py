"""The study folder: where every stage reads and writes (see ../shared/ARCHITECTURE.md).

``protocol.json`` records the format version, the parameters of each stage actually run and when.
A folder written by a newer spectct (higher ``study_format``) is refused rather than misread.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spectct import __version__
from spectct.atomic import ensure_writable_dir, write_text
from spectct.errors import InputError, OutputError

STUDY_FORMAT = 1


@dataclass(frozen=True)
class Study:
    """Paths of one study folder."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike, create: bool = True) -> Study:
        root = Path(root)
        if create:
            ensure_writable_dir(root)
        elif not root.is_dir():
            raise InputError(f"{root}: study folder does not exist")
        study = cls(root)
        study.check_format()
        return study

    # ------------------------------------------------------------- layout
    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def truth(self) -> Path:
        return self.root / "truth"

    @property
    def ct(self) -> Path:
        return self.root / "ct"

    @property
    def spect(self) -> Path:
        return self.root / "spect"

    @property
    def planar(self) -> Path:
        return self.root / "planar"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def protocol_path(self) -> Path:
        return self.root / "protocol.json"

    # ------------------------------------------------------------- protocol
    def read_protocol(self) -> dict[str, Any]:
        path = self.protocol_path
        if not path.exists():
            return {"study_format": STUDY_FORMAT, "spectct_version": __version__, "stages": {}}
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path}: expected a JSON object")
        doc.setdefault("stages", {})
        return doc

    def check_format(self) -> None:
        doc = self.read_protocol()
        fmt = doc.get("study_format", STUDY_FORMAT)
        if not isinstance(fmt, int) or fmt > STUDY_FORMAT:
            raise OutputError(
                f"{self.protocol_path}: study format {fmt} was written by a newer spectct "
                f"({doc.get('spectct_version', '?')}); this is spectct {__version__} (format {STUDY_FORMAT})"
            )

    def record_stage(self, stage: str, parameters: dict[str, Any], seconds: float | None = None) -> None:
        """Store the parameters a stage ran with (merged into protocol.json atomically)."""
        doc = self.read_protocol()
        doc["study_format"] = STUDY_FORMAT
        doc["spectct_version"] = __version__
        doc["stages"][stage] = {
            "parameters": parameters,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            **({"seconds": round(seconds, 2)} if seconds is not None else {}),
        }
        write_text(self.protocol_path, json.dumps(doc, indent=2, default=_json_default))

    def stage_parameters(self, stage: str) -> dict[str, Any] | None:
        entry = self.read_protocol()["stages"].get(stage)
        return None if entry is None else entry.get("parameters")

    def record_run(self, stage: str, parameters: dict[str, Any], seconds: float) -> None:
        """Note that the pipeline ran ``stage`` with ``parameters`` (its up-to-date key) in ``seconds``."""
        doc = self.read_protocol()
        doc["study_format"] = STUDY_FORMAT
        doc["spectct_version"] = __version__
        doc.setdefault("pipeline", {})[stage] = {
            "parameters": parameters, "seconds": round(seconds, 2),
            "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        write_text(self.protocol_path, json.dumps(doc, indent=2, default=_json_default))

    def run_parameters(self, stage: str) -> dict[str, Any] | None:
        entry = self.read_protocol().get("pipeline", {}).get(stage)
        return None if entry is None else entry.get("parameters")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
