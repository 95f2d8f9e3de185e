"""A small local web server for the fused SPECT/CT viewer page (``spectct view``).

The server is built on the standard library (:class:`http.server.ThreadingHTTPServer`) and serves a
fixed table of URLs: the page and its vendored assets (NiiVue, script, style) and the files of one study
that the page knows about. Every URL is looked up in that table, built once at start-up from files that
resolve inside the study folder (or inside the conversion cache), so nothing else on disk can be reached:
no directory listing, no ``..``, no absolute paths, no symlinks pointing out of the study.

URL layout
----------
``/``                       the page (``assets/index.html``)
``/assets/<name>``          a file of ``spectct/viewer/assets``
``/study/manifest.json``    what the study holds: volume URLs, findings, figures, what is missing
``/study/<key>``            one study file (``ct_nomar.nii.gz``, ``ct_mar.nii.gz``, ``spect.nii.gz``,
                            ``findings.json``, ``figures/<name>`` for .png, .gif and .mp4 figures)

Files are sent whole, or one byte range when the request asks for ``Range: bytes=a-b`` (RFC 9110 §14):
browsers fetch ``video/mp4`` in ranges to seek, and some play a video only from a server that answers them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import mimetypes
import os
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from spectct.errors import InputError, OutputError
from spectct.progress import SILENT, Reporter

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

# Study files the page uses: manifest key -> path inside the study folder, in the pipeline's layout.
STUDY_VOLUMES = {
    "ct_nomar": Path("ct") / "ct_nomar.nii.gz",
    "ct_mar": Path("ct") / "ct_mar.nii.gz",
    "spect": Path("spect") / "spect.nii.gz",
}
VOLUME_LABELS = {"ct_nomar": "CT without MAR", "ct_mar": "CT with MAR", "spect": "SPECT (Bq/mL)"}
FIGURE_SUFFIXES = (".png", ".gif", ".mp4")
ROTATING_MIP = "spect_mip_rotating.gif"
ROTATING_MIP_VIDEO = "spect_mip_rotating.mp4"  # the same cine as H.264 video (optional)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".gz": "application/octet-stream",  # NiiVue inflates .nii.gz itself: no Content-Encoding
    ".nii": "application/octet-stream",
}


@dataclass
class StudyContent:
    """What the viewer serves for one study.

    Attributes
    ----------
    root : the study folder as given.
    files : URL key (under ``/study/``) -> absolute file path; the only study files the server sends.
    manifest : the JSON document served as ``/study/manifest.json``.
    """

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        return list(self.manifest.get("missing", []))


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``folder`` (symlinks resolved)."""
    try:
        path.resolve(strict=True).relative_to(folder.resolve(strict=True))
    except (OSError, ValueError):
        return False
    return True


def _safe_file(study: Path, relative: Path, problems: list[str]) -> Path | None:
    """The resolved file ``study/relative`` when it is a regular file inside the study, else None."""
    candidate = study / relative
    if not candidate.exists():
        return None
    if not candidate.is_file():
        problems.append(f"{candidate}: not a regular file, ignored")
        return None
    if not _inside(candidate, study):
        problems.append(f"{candidate}: points outside the study folder, ignored")
        return None
    return candidate.resolve()


def _convert_dicom(study: Path, cache_dir: Path, reporter: Reporter, problems: list[str]) -> dict[str, Path]:
    """Find a DICOM CT series and an NM reconstruction under ``study`` and write them as NIfTI to the cache.

    Returns manifest key -> NIfTI path for what was found (``ct_nomar`` for the CT, ``spect`` for the NM
    reconstruction). The cache is keyed by the DICOM file names, sizes and times, so a second ``spectct view``
    of the same folder does not convert again.
    """
    from spectct.io.dicom_common import dicom_files
    from spectct.io.dicom_ct import find_ct_series
    from spectct.io.load import _nm_kind, load_volume
    from spectct.io.nifti import write_nifti

    try:
        files, _ = dicom_files(study)
    except InputError as exc:
        problems.append(str(exc))
        return {}
    files = [f for f in files if _inside(f, study)]
    if not files:
        return {}
    sources: dict[str, tuple[list[Path], dict]] = {}
    try:
        series = find_ct_series(study, reporter=reporter)
    except InputError as exc:
        problems.append(str(exc))
        series = {}
    if series:
        # the series with the most slices is the diagnostic/attenuation CT of the study
        best = max(series.values(), key=lambda s: len(s.files))
        if len(series) > 1:
            problems.append(f"{len(series)} CT series found; showing {best.series_uid} ({len(best.files)} slices)")
        sources["ct_nomar"] = (best.files, {"path": study, "series_uid": best.series_uid})
    tomo = None
    ct_files = {f.resolve() for s in series.values() for f in s.files}
    for f in files:
        if f.resolve() in ct_files:
            continue
        with contextlib.suppress(InputError, OSError):
            kind = _nm_kind(f)
            if kind == "recon":
                sources["spect"] = ([f], {"path": f})
                break
            if kind == "tomo" and tomo is None:
                tomo = f
    if "spect" not in sources and tomo is not None:
        problems.append(f"{tomo}: SPECT projections, not a reconstruction; reconstruct them with "
                        "`spectct recon-spect` and view the resulting study folder")
    out: dict[str, Path] = {}
    for key, (members, how) in sources.items():
        stamp = hashlib.sha256()
        for f in members:
            st = f.stat()
            stamp.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
        target = cache_dir / f"{key}-{stamp.hexdigest()[:16]}.nii.gz"
        if not target.exists():
            reporter.info(f"converting DICOM {how['path']} to {target}")
            try:
                volume = _compact(load_volume(how["path"], series_uid=how.get("series_uid"), reporter=reporter))
                write_nifti(volume, target)
            except (InputError, OutputError) as exc:
                problems.append(f"{how['path']}: could not be converted ({exc})")
                continue
        out[key] = target
    return out


def _compact(volume):
    """CT in whole HU within the int16 range is stored as int16 (lossless, half the download)."""
    import numpy as np

    data = volume.data
    if volume.unit == "HU" and data.size and np.issubdtype(data.dtype, np.floating):
        lo, hi = float(data.min()), float(data.max())
        if -32768 <= lo and hi <= 32767 and np.array_equal(data, np.round(data)):
            volume = dataclasses.replace(volume, data=data.astype(np.int16))
    return volume


def _volume_max(path: Path, problems: list[str]) -> float | None:
    """Largest finite value of a NIfTI volume (None when unreadable)."""
    import nibabel as nib
    import numpy as np

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        problems.append(f"{path}: not a readable NIfTI file ({exc})")
        return None
    finite = data[np.isfinite(data)] if np.issubdtype(data.dtype, np.floating) else data
    return float(finite.max()) if finite.size else None


def _read_findings(path: Path, problems: list[str]) -> list[dict] | None:
    """The findings of ``findings.json`` (validated against the schema), or None with a problem noted."""
    from spectct.analysis.findings import read_findings

    try:
        doc = read_findings(path)
    except InputError as exc:
        problems.append(str(exc))
        return None
    rows = []
    for f in doc.get("findings", []):
        x, y, z = (float(v) for v in f["peak_lps"])
        rows.append(
            {
                "id": f["id"],
                "kind": f["kind"],
                "peak_lps": [x, y, z],
                # NiiVue's world space is RAS: the same point with x and y negated.
                "peak_ras": [-x, -y, z],
                "peak_bq_ml": f["peak_bq_ml"],
                "side": f.get("side"),
                "structure": f.get("structure"),
                "tissue": f.get("tissue"),
                "nearest_implant": f.get("nearest_implant"),
                "nearest_implant_mm": f.get("nearest_implant_mm"),
                "classification": f.get("classification"),
                "description": f.get("description", ""),
            }
        )
    return rows


def scan_study(study: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
               reporter: Reporter = SILENT) -> StudyContent:
    """Collect the files the viewer serves for ``study`` and describe them in a manifest.

    Parameters
    ----------
    study : a study folder in the pipeline's layout (``ct/ct_nomar.nii.gz``, ``ct/ct_mar.nii.gz``,
        ``spect/spect.nii.gz``, ``findings.json``, ``figures/*.png|gif|mp4``), or a folder of DICOM files
        (a CT series and an NM RECON TOMO file, in any sub-folders), which is converted to NIfTI on the way in.
    cache_dir : where DICOM conversions go; default ``<study>/.spectct-view-cache`` when the study is
        writable, else a folder under the user's cache.
    reporter : progress messages.

    Returns
    -------
    StudyContent : the URL table and the manifest (with ``missing`` naming what the study lacks).

    Raises
    ------
    InputError : ``study`` is not a folder, or holds neither a CT nor a SPECT volume.
    """
    root = Path(study)
    if not root.is_dir():
        raise InputError(f"{root}: no such study folder")
    problems: list[str] = []
    files: dict[str, Path] = {}
    volumes = []
    found: dict[str, Path] = {}
    for key, rel in STUDY_VOLUMES.items():
        path = _safe_file(root, rel, problems)
        if path is not None:
            found[key] = path
    source = "nifti"
    if not found:
        cache = Path(cache_dir) if cache_dir is not None else _default_cache(root)
        found = _convert_dicom(root, cache, reporter, problems)
        source = "dicom"
    for key in STUDY_VOLUMES:
        if key in found:
            url_key = f"{key}.nii.gz"
            files[url_key] = found[key]
            entry = {"key": key, "label": VOLUME_LABELS[key], "url": f"/study/{url_key}",
                     "unit": "Bq/mL" if key == "spect" else "HU"}
            if key == "spect":
                # the page sets the SPECT colour scale before loading, which saves a second GPU upload
                entry["max"] = _volume_max(found[key], problems)
            volumes.append(entry)
    if not volumes:
        raise InputError(
            f"{root}: no CT or SPECT found (expected {STUDY_VOLUMES['ct_nomar']}, {STUDY_VOLUMES['ct_mar']}, "
            f"{STUDY_VOLUMES['spect']} or DICOM CT/NM RECON files)"
        )
    missing = []
    if "ct_nomar" not in found and "ct_mar" not in found:
        missing.append("CT (ct/ct_nomar.nii.gz or ct/ct_mar.nii.gz)")
    if "spect" not in found:
        missing.append("SPECT (spect/spect.nii.gz)")
    findings = None
    fpath = _safe_file(root, Path("findings.json"), problems)
    if fpath is not None:
        files["findings.json"] = fpath
        findings = _read_findings(fpath, problems)
    else:
        missing.append("findings (findings.json)")
    figures = []
    fig_dir = root / "figures"
    if fig_dir.is_dir():
        for f in sorted(fig_dir.iterdir()):
            if f.suffix.lower() in FIGURE_SUFFIXES:
                path = _safe_file(root, Path("figures") / f.name, problems)
                if path is not None:
                    files[f"figures/{f.name}"] = path
                    figures.append({"name": f.name, "url": f"/study/figures/{f.name}"})
    mip = next((fig["url"] for fig in figures if fig["name"] == ROTATING_MIP), None)
    mip_video = next((fig["url"] for fig in figures if fig["name"] == ROTATING_MIP_VIDEO), None)
    if mip is None:
        missing.append(f"rotating MIP (figures/{ROTATING_MIP})")
    from spectct.render.colormaps import WINDOW_PRESETS

    manifest = {
        "study": root.resolve().name,
        "window_presets": {name: list(lw) for name, lw in WINDOW_PRESETS.items()},
        "source": source,
        "volumes": volumes,
        "findings": findings,
        "figures": figures,
        "rotating_mip": mip,
        "rotating_mip_video": mip_video,
        "missing": missing,
        "problems": problems,
    }
    return StudyContent(root=root, files=files, manifest=manifest)


def _default_cache(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / ".spectct-view-cache"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "spectct" / "view" / digest


def _asset_table() -> dict[str, Path]:
    """``/assets/<name>`` -> file, for the regular files shipped in the assets folder."""
    return {p.name: p for p in sorted(ASSETS_DIR.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range ``[start, stop)`` a ``Range`` header asks of a ``size``-byte file (RFC 9110 §14.1.2).

    None when the header is absent, malformed, not in bytes or asks for several ranges: the whole file is then
    sent with 200, which the RFC allows a server to do for any range request. ``"unsatisfiable"`` (416) when
    the single range starts at or beyond the end of the file, or is an empty suffix.
    """
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first or last) or not (first.isdigit() or not first) or not (last.isdigit() or not last):
        return None
    if not first:  # suffix range: the last N bytes
        n = int(last)
        return "unsatisfiable" if n == 0 or size == 0 else (max(0, size - n), size)
    start = int(first)
    stop = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, stop


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD only; every path is looked up in the server's fixed routes, anything else is 404."""

    server_version = "spectct-view"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        reporter: Reporter = self.server.reporter  # type: ignore[attr-defined]
        if not reporter.quiet and getattr(self.server, "log_requests", False):
            reporter.info(format % args)

    def _route(self) -> tuple[bytes | Path, str] | None:
        routes: dict[str, Path] = self.server.routes  # type: ignore[attr-defined]
        raw = urlsplit(self.path).path
        path = unquote(raw)
        if path == "/study/manifest.json":
            return json.dumps(self.server.content.manifest).encode(), _TYPES[".json"]  # type: ignore[attr-defined]
        target = routes.get(path)
        if target is None:
            return None
        suffix = target.suffix.lower()
        return target, _TYPES.get(suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"

    def _send(self, head_only: bool) -> None:
        found = self._route()
        if found is None:
            self._plain(404, b"not found\n", head_only)
            return
        payload, ctype = found
        try:
            size = len(payload) if isinstance(payload, bytes) else payload.stat().st_size
        except OSError:  # the file went away after start-up
            self.send_error(404)
            return
        span = _byte_range(self.headers.get("Range"), size)
        if span == "unsatisfiable":
            self._plain(416, b"range not satisfiable\n", head_only, {"Content-Range": f"bytes */{size}"})
            return
        start, stop = span if span is not None else (0, size)
        self.send_response(206 if span is not None else 200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(stop - start))
        if span is not None:
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if head_only:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if isinstance(payload, bytes):
                self.wfile.write(payload[start:stop])
            else:
                with open(payload, "rb") as fh:
                    fh.seek(start)
                    left = stop - start
                    while left > 0:
                        chunk = fh.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)

    def _plain(self, status: int, body: bytes, head_only: bool, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._send(head_only=False)

    def do_HEAD(self):  # noqa: N802
        self._send(head_only=True)


class ViewerServer(ThreadingHTTPServer):
    """The viewer's HTTP server: a fixed URL table for one study.

    Use :func:`make_server` to build one; ``serve_forever()`` / ``shutdown()`` as for any socketserver.
    """

    daemon_threads = True
    # SO_REUSEADDR lets a restarted viewer take its port back from TIME_WAIT; on Linux it never lets two
    # listeners share a port. SO_REUSEPORT would, so a second `spectct view` on a busy port must fail.
    allow_reuse_address = os.name != "nt"
    allow_reuse_port = False

    def __init__(self, address, content: StudyContent, reporter: Reporter = SILENT):
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.content = content
        self.reporter = reporter
        self.log_requests = False
        routes: dict[str, Path] = {"/": ASSETS_DIR / "index.html", "/index.html": ASSETS_DIR / "index.html"}
        routes.update({f"/assets/{name}": p for name, p in _asset_table().items()})
        routes.update({f"/study/{key}": p for key, p in content.files.items()})
        self.routes = routes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"


def make_server(content: StudyContent, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False,
                reporter: Reporter = SILENT) -> ViewerServer:
    """Bind the viewer's server for ``content``.

    Parameters
    ----------
    content : from :func:`scan_study`.
    host : address to bind; only loopback addresses unless ``allow_remote`` is set (``--host`` given).
    port : TCP port; 0 picks a free one.
    allow_remote : permit a non-loopback ``host``.

    Raises
    ------
    InputError : a non-loopback host without ``allow_remote``, or a port outside 0–65535.
    OutputError : the port is in use or the address cannot be bound.
    """
    if host not in LOOPBACK_HOSTS and not allow_remote:
        raise InputError(f"refusing to serve on {host!r}: the viewer binds to 127.0.0.1 unless --host is given")
    if not 0 <= int(port) <= 65535:
        raise InputError(f"--port {port}: not a TCP port (0-65535)")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        return ViewerServer((host, int(port)), content, reporter=reporter)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OutputError(f"port {port} on {host} is already in use; pick another with --port") from None
        raise OutputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def _has_display() -> bool:
    """False on a Linux/BSD machine without X11 or Wayland, where webbrowser would start a text browser."""
    if os.name != "posix" or sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve(study: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True,
          allow_remote: bool = False, cache_dir: str | os.PathLike | None = None,
          reporter: Reporter = SILENT, ready: threading.Event | None = None) -> None:
    """Scan ``study``, serve the viewer until interrupted (Ctrl-C) and optionally open a browser on it."""
    content = scan_study(study, cache_dir=cache_dir, reporter=reporter)
    server = make_server(content, host=host, port=port, allow_remote=allow_remote, reporter=reporter)
    for line in content.manifest["missing"]:
        reporter.info(f"[yellow]missing:[/] {line}")
    for line in content.manifest["problems"]:
        reporter.info(f"[yellow]warning:[/] {line}")
    reporter.info(f"spectct viewer for {content.root} at {server.url} (Ctrl-C to stop)")
    if open_browser and _has_display():
        threading.Timer(0.3, lambda: webbrowser.open(server.url)).start()
    elif open_browser:
        reporter.info("no display found: open the address above in a browser (on this machine, or through "
                      "an SSH tunnel: ssh -L PORT:127.0.0.1:PORT host)")
    if ready is not None:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        reporter.info("viewer stopped")
    finally:
        server.server_close()
