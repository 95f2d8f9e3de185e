"""The browser viewer (`spectct view`): study scan, URL table, path-traversal refusals, bind rules, CLI errors,
and the page itself in headless Chromium (volumes loaded, findings table, click-to-jump crosshair)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from spectct.errors import InputError, OutputError
from spectct.io.nifti import write_nifti
from spectct.viewer.headless import HeadlessChromium, find_chromium
from spectct.viewer.server import ASSETS_DIR, make_server, scan_study
from spectct.volume import Volume

FINDING_LPS = (-36.0, 20.0, 16.0)  # patient right, posterior, cranial of the centre: far from the start crosshair
SECOND_LPS = (30.0, -10.0, -20.0)
CT_SPACING = 4.0


def _finding(fid: int, peak_lps, implant: str | None):
    from spectct.analysis.findings import Finding

    return Finding(
        id=fid, kind="focus", peak_lps=tuple(peak_lps), peak_bq_ml=5.0e4, mean_bq_ml=3.0e4, volume_ml=4.0,
        ratio_to_background=25.0, ratio_to_contralateral=None, side="right", structure="femur", third="middle",
        tissue="bone", fraction_in_bone=0.8, nearest_implant=implant, nearest_implant_mm=6.0,
        classification="infection likely", reason="hot focus on an implant", description="test focus",
    )


def make_study(root: Path, with_spect: bool = True, with_ct: bool = True, with_mar: bool = True,
               with_findings: bool = True) -> Path:
    """A small synthetic study: CT (body cylinder, a metal rod), SPECT (a hot ball at FINDING_LPS)."""
    from spectct.analysis import build_document
    from spectct.analysis.findings import write_findings

    n = 48
    origin = tuple(-(n - 1) / 2 * CT_SPACING for _ in range(3))
    ct_data = np.full((n, n, n), -1000.0, np.float32)
    ct = Volume(ct_data, (CT_SPACING,) * 3, origin, unit="HU", frame_of_reference="1.2.3")
    zyx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1)
    xyz = ct.index_to_world(zyx)
    body = np.hypot(xyz[..., 0], xyz[..., 1]) < 80
    ct_data[body] = 40.0
    ct_data[np.hypot(xyz[..., 0] - FINDING_LPS[0], xyz[..., 1] - FINDING_LPS[1]) < 14] = 900.0  # bone
    rod = np.hypot(xyz[..., 0] - FINDING_LPS[0] - 8, xyz[..., 1] - FINDING_LPS[1]) < 4
    ct_mar = ct_data.copy()
    ct_data[rod] = 3071.0
    ct_mar[rod] = 3071.0
    ct_data[body & ~rod & (np.abs(xyz[..., 1] - FINDING_LPS[1]) < 3)] -= 300.0  # a streak MAR removes
    m = 24
    s_origin = tuple(-(m - 1) / 2 * 2 * CT_SPACING for _ in range(3))
    spect = Volume(np.zeros((m, m, m), np.float32), (2 * CT_SPACING,) * 3, s_origin, unit="Bq/mL",
                   frame_of_reference="1.2.3")
    s_xyz = spect.index_to_world(np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1))
    r2 = ((s_xyz - np.array(FINDING_LPS)) ** 2).sum(-1)
    spect.data[:] = 2.0e3 * (np.hypot(s_xyz[..., 0], s_xyz[..., 1]) < 80) + 5.0e4 * np.exp(-r2 / (2 * 8.0**2))
    root.mkdir(parents=True, exist_ok=True)
    if with_ct:
        write_nifti(ct, root / "ct" / "ct_nomar.nii.gz")
        if with_mar:
            write_nifti(Volume(ct_mar, ct.spacing, ct.origin, unit="HU"), root / "ct" / "ct_mar.nii.gz")
    if with_spect:
        write_nifti(spect, root / "spect" / "spect.nii.gz")
    if with_findings:
        background = {"statistic": "median", "region": "body", "median_bq_ml": 2.0e3, "mad_bq_ml": 100.0,
                      "k": 5.0, "threshold_bq_ml": 2.5e3}
        doc = build_document([_finding(1, FINDING_LPS, "right lateral plate screw 2"),
                              _finding(2, SECOND_LPS, None)],
                             [], None, background, spect, ct, None, None, [])
        write_findings(doc, root / "findings.json")
    (root / "figures").mkdir(exist_ok=True)
    from PIL import Image

    frames = [Image.fromarray(np.uint8(np.roll(np.eye(32) * 255, k, axis=1))) for k in range(4)]
    frames[0].save(root / "figures" / "spect_mip_rotating.gif", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("viewer") / "study")


@pytest.fixture(scope="module")
def running(study):
    """A server for the synthetic study on a free loopback port, shut down after the test."""
    server = make_server(scan_study(study), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _raw_get(server, raw_path: str, method: str = "GET") -> tuple[int, bytes]:
    """Send ``GET raw_path`` byte for byte (no client-side normalisation of ``..`` or ``%2e``)."""
    status, _, body = _get_with_headers(server, raw_path, method=method)
    return status, body


# ---------------------------------------------------------------------------------------- study scan

def test_manifest_lists_volumes_findings_in_ras(study):
    content = scan_study(study)
    m = content.manifest
    assert [v["key"] for v in m["volumes"]] == ["ct_nomar", "ct_mar", "spect"]
    assert m["missing"] == [] and m["problems"] == []
    f = m["findings"][0]
    assert f["nearest_implant"] == "right lateral plate screw 2"
    assert f["peak_ras"] == [-FINDING_LPS[0], -FINDING_LPS[1], FINDING_LPS[2]]
    assert m["rotating_mip"] == "/study/figures/spect_mip_rotating.gif"
    assert m["window_presets"]["bone"] == [400.0, 1800.0]
    # the NIfTI affine is RAS: the finding's RAS point maps into the hot voxel of the served SPECT file
    import nibabel as nib

    img = nib.load(str(content.files["spect.nii.gz"]))
    ijk = np.rint(np.linalg.inv(img.affine) @ np.array([*f["peak_ras"], 1.0]))[:3].astype(int)
    data = np.asarray(img.dataobj)
    assert data[tuple(ijk)] > 0.9 * data.max()


def test_study_missing_spect_says_so(tmp_path):
    root = make_study(tmp_path / "s", with_spect=False, with_mar=False)
    m = scan_study(root).manifest
    assert [v["key"] for v in m["volumes"]] == ["ct_nomar"]
    assert any("SPECT" in line for line in m["missing"])


def test_invalid_findings_are_reported_not_fatal(tmp_path):
    root = make_study(tmp_path / "s", with_mar=False)
    (root / "findings.json").write_text('{"schema": "spectct-findings", "findings": []}')
    m = scan_study(root).manifest
    assert m["findings"] is None
    assert any("findings document invalid" in p for p in m["problems"])
    assert [v["key"] for v in m["volumes"]] == ["ct_nomar", "spect"]


def test_study_with_nothing_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no CT or SPECT"):
        scan_study(tmp_path / "empty")
    with pytest.raises(InputError, match="no such study folder"):
        scan_study(tmp_path / "absent")


def test_symlink_out_of_study_is_not_served(tmp_path):
    root = make_study(tmp_path / "s", with_mar=False)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret")
    (root / "figures" / "leak.png").symlink_to(secret)
    os.symlink(root / "ct" / "ct_nomar.nii.gz", root / "ct" / "ct_mar.nii.gz")  # inside: allowed
    outside = tmp_path / "outside.nii.gz"
    shutil.copy(root / "spect" / "spect.nii.gz", outside)
    (root / "spect" / "spect.nii.gz").unlink()
    (root / "spect" / "spect.nii.gz").symlink_to(outside)
    content = scan_study(root)
    assert "figures/leak.png" not in content.files
    assert "spect.nii.gz" not in content.files
    assert content.files["ct_mar.nii.gz"] == (root / "ct" / "ct_nomar.nii.gz").resolve()
    assert sum("outside the study" in p for p in content.manifest["problems"]) == 2


def test_dicom_only_study_is_converted(tmp_path):
    from spectct.io.dicom_out import write_ct_series, write_spect_series

    src = make_study(tmp_path / "nifti", with_mar=False, with_findings=False)
    from spectct.io.nifti import read_nifti

    ct = read_nifti(src / "ct" / "ct_nomar.nii.gz")
    spect = read_nifti(src / "spect" / "spect.nii.gz")
    dicom = tmp_path / "dicom"
    write_ct_series(ct, dicom / "CT")
    write_spect_series(spect, dicom / "NM")
    content = scan_study(dicom, cache_dir=tmp_path / "cache")
    assert content.manifest["source"] == "dicom"
    assert [v["key"] for v in content.manifest["volumes"]] == ["ct_nomar", "spect"]
    back = read_nifti(content.files["spect.nii.gz"])
    assert np.allclose(back.data, spect.data, rtol=1e-3, atol=1.0)
    assert np.allclose(back.origin, spect.origin, atol=1e-3)


# ---------------------------------------------------------------------------------------- server

def test_serves_page_assets_and_study_files(running, study):
    status, body = _raw_get(running, "/")
    assert status == 200 and b"niivue.umd.js" in body
    status, body = _raw_get(running, "/assets/niivue.umd.js")
    assert status == 200 and len(body) > 1_000_000
    status, body = _raw_get(running, "/study/spect.nii.gz")
    assert status == 200 and body == (study / "spect" / "spect.nii.gz").read_bytes()
    status, body = _raw_get(running, "/study/manifest.json")
    assert status == 200 and json.loads(body)["findings"][0]["id"] == 1
    status, _ = _raw_get(running, "/study/figures/spect_mip_rotating.gif")
    assert status == 200
    status, body = _raw_get(running, "/study/ct_mar.nii.gz", method="HEAD")
    assert status == 200 and body == b""
    assert _raw_get(running, "/study/ct_mar.nii.gz", method="POST")[0] == 501


def _get_with_headers(server, path: str, extra: str = "", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request with ``extra`` header lines."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def test_rotating_mip_video_is_served_as_mp4_in_byte_ranges(tmp_path):
    from spectct.render.mip import write_mp4

    root = make_study(tmp_path / "s", with_mar=False)
    frames = [np.full((24, 32, 3), 40 * k, np.uint8) for k in range(4)]
    video = write_mp4(frames, root / "figures" / "spect_mip_rotating.mp4", fps=4.0)
    data = video.read_bytes()
    content = scan_study(root)
    assert content.manifest["rotating_mip_video"] == "/study/figures/spect_mip_rotating.mp4"
    assert "spect_mip_rotating.mp4" in [f["name"] for f in content.manifest["figures"]]
    assert scan_study(make_study(tmp_path / "t", with_mar=False)).manifest["rotating_mip_video"] is None
    server = make_server(content, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = "/study/figures/spect_mip_rotating.mp4"
    try:
        status, h, body = _get_with_headers(server, url)
        assert status == 200 and h["content-type"] == "video/mp4" and body == data
        assert h["accept-ranges"] == "bytes" and int(h["content-length"]) == len(data)
        status, h, body = _get_with_headers(server, url, "Range: bytes=0-1\r\n")  # what browsers ask first
        assert status == 206 and body == data[:2] and h["content-range"] == f"bytes 0-1/{len(data)}"
        status, h, body = _get_with_headers(server, url, "Range: bytes=100-\r\n")
        assert status == 206 and body == data[100:] and h["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        status, h, body = _get_with_headers(server, url, "Range: bytes=-50\r\n")
        assert status == 206 and body == data[-50:]
        status, h, body = _get_with_headers(server, url, f"Range: bytes=10-{10 * len(data)}\r\n")
        assert status == 206 and body == data[10:]  # an end beyond the file is cut to it
        status, h, _ = _get_with_headers(server, url, f"Range: bytes={len(data)}-\r\n")
        assert status == 416 and h["content-range"] == f"bytes */{len(data)}"
        for ignored in ("bytes=0-1,4-5", "lines=0-1", "bytes=5-2", "bytes=x-"):  # whole file, as RFC 9110 allows
            status, _, body = _get_with_headers(server, url, f"Range: {ignored}\r\n")
            assert status == 200 and body == data, ignored
        status, h, body = _get_with_headers(server, url, "Range: bytes=0-9\r\n", method="HEAD")
        assert status == 206 and body == b"" and h["content-length"] == "10"
        status, h, body = _get_with_headers(server, "/study/manifest.json", "Range: bytes=0-0\r\n")
        assert status == 206 and body == b"{"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("raw", [
    "/../../../../etc/passwd",
    "/study/../../../../etc/passwd",
    "/study/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/study/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/assets/..%2f..%2fserver.py",
    "/assets/../server.py",
    "//etc/passwd",
    "/etc/passwd",
    "/study/",
    "/study",
    "/assets/",
    "/study/ct/ct_nomar.nii.gz",  # real layout paths are not URLs: only the table's keys are
    "/study/findings.json/..",
    "/study/figures/",
    "/study/%00findings.json",
])
def test_traversal_and_listing_are_404(running, raw):
    status, body = _raw_get(running, raw)
    assert status == 404, raw
    assert b"root:" not in body and b"import" not in body


def test_absolute_url_to_a_file_is_404(running, study):
    status, _ = _raw_get(running, str((study / "findings.json").resolve()))
    assert status == 404


def test_refuses_non_loopback_without_explicit_host(study):
    content = scan_study(study)
    with pytest.raises(InputError, match="127.0.0.1"):
        make_server(content, host="0.0.0.0")
    server = make_server(content, host="0.0.0.0", port=0, allow_remote=True)
    server.server_close()


def test_port_in_use_is_a_clear_error(study):
    content = scan_study(study)
    first = make_server(content, port=0)
    try:  # a second viewer on the same port (socket options identical) must not share it
        with pytest.raises(OutputError, match="already in use"):
            make_server(content, port=first.server_address[1])
    finally:
        first.server_close()


def test_cli_port_in_use_is_reported(study):
    from typer.testing import CliRunner

    from spectct.cli import app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = CliRunner().invoke(app, ["view", str(study), "--port", str(port), "--no-browser", "--quiet"])
    assert isinstance(res.exception, OutputError)  # spectct.cli.main turns it into one line and exit code 2
    assert f"port {port}" in str(res.exception) and "already in use" in str(res.exception)


def test_vendored_niivue_is_the_pinned_file():
    note = (ASSETS_DIR / "VERSION-niivue.txt").read_text()
    pinned = re.search(r"sha256:\s+([0-9a-f]{64})", note).group(1)
    assert hashlib.sha256((ASSETS_DIR / "niivue.umd.js").read_bytes()).hexdigest() == pinned
    assert "BSD 2-Clause" in (ASSETS_DIR / "LICENSE-niivue").read_text()
    size = sum(p.stat().st_size for p in ASSETS_DIR.iterdir())
    assert size < 5_000_000
    page = (ASSETS_DIR / "index.html").read_text() + (ASSETS_DIR / "viewer.js").read_text()
    assert "http://" not in page.replace("http://127.0.0.1", "") and "https://" not in page  # no CDN


# ---------------------------------------------------------------------------------------- browser

def _chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium not installed (apt-get install chromium); the browser test needs it")
    return path


@pytest.fixture
def browser(tmp_path):
    b = HeadlessChromium(tmp_path / "profile", executable=_chromium())
    yield b
    b.close()


STATUS = "(document.querySelector('#status') || {dataset: {}}).dataset"


def test_page_in_headless_chromium(running, browser, tmp_path):
    """The reader's path in a real browser: a deep link opens the page on finding 2; the page loads both
    volumes and the findings table; a mouse click on finding 1 moves the crosshair NiiVue reports onto that
    finding's position; the readout shows HU and Bq/mL there; window presets and the MAR toggle act on the
    CT. The screenshot is written to $SPECTCT_VIEWER_SCREENSHOT when set, to look at."""
    ras_of = {f_id: np.array([-p[0], -p[1], p[2]]) for f_id, p in ((1, FINDING_LPS), (2, SECOND_LPS))}
    browser.page("Page.navigate", url=running.url + "#finding=2")
    browser.wait_for(f"{STATUS}.state === 'error' || ({STATUS}.state === 'ready' && {STATUS}.crosshairRas !== '')")
    assert browser.js(f"{STATUS}.state") == "ready", browser.js("document.body.innerText")
    assert browser.js(f"{STATUS}.volumes") == "ct_mar,spect"
    assert browser.js("document.querySelectorAll('#findings tbody tr').length") == 2
    assert "right lateral plate screw 2" in browser.js("document.querySelector('#findings').innerText")
    half_voxel = CT_SPACING / 2 + 1e-3
    ras = np.array(browser.js("window.spectctViewer.crosshairRas()"))
    assert np.all(np.abs(ras - ras_of[2]) <= half_voxel), (ras, ras_of[2])

    browser.click('#findings tbody tr[data-finding-id="1"]')
    ras = np.array(browser.js("window.spectctViewer.crosshairRas()"))
    assert np.all(np.abs(ras - ras_of[1]) <= half_voxel), (ras, ras_of[1])
    assert browser.js("document.querySelector('tr.selected').dataset.findingId") == "1"
    spect_text = browser.js("document.querySelector('#readout-spect').innerText")
    assert "Bq/mL" in spect_text and float(spect_text.split()[0].replace(",", "")) > 0.8 * 5.0e4
    assert browser.js("document.querySelector('#readout-ct').innerText") == "900 HU"
    browser.js("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    shot = tmp_path / "viewer.png"
    browser.screenshot(shot)
    dest = os.environ.get("SPECTCT_VIEWER_SCREENSHOT")
    if dest:
        shutil.copy(shot, dest)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    canvas = img[40:, 270:1150]  # the NiiVue canvas column: CT greys and a hot SPECT focus
    assert canvas.std() > 10
    assert ((canvas[..., 0] > 180) & (canvas[..., 2] < 80)).sum() > 50

    browser.click("#window-presets button[data-window='metal']")
    assert browser.js("[window.spectctViewer.state.ctVol.cal_min, window.spectctViewer.state.ctVol.cal_max]") \
        == [-1000, 3000]
    browser.click("#ct-choice input[value='ct_nomar']")
    browser.wait_for(f"{STATUS}.volumes === 'ct_nomar,spect'", timeout_s=30)
    assert browser.js("window.spectctViewer.state.ctVol.cal_max") == 3000  # the window survives the switch
    assert np.allclose(browser.js("window.spectctViewer.crosshairRas()"), ras, atol=half_voxel)
    browser.click("#mip-toggle")  # the rotating MIP cine: the study's GIF, decoded by the browser
    assert browser.wait_for("(() => { const i = document.querySelector('#mip');"
                            " return !i.hidden && i.complete && i.naturalWidth; })()", timeout_s=10) == 32


@pytest.mark.slow
def test_real_ge_dicom_folder(shared_data, tmp_path):
    """The GE Discovery 670 export as a DICOM-only folder: the CT is converted (int16, lossless) and shown;
    the NM file holds projections, which the manifest says instead of failing."""
    import lzma
    import tarfile

    from spectct.io.dicom_ct import read_ct_series
    from spectct.io.nifti import read_nifti

    src = shared_data / "ge-lu177-spectct"
    folder = tmp_path / "ge"
    with tarfile.open(src / "ct_series.tar.xz") as tar:
        tar.extractall(folder, filter="data")
    with lzma.open(src / "bed1_projections.dcm.xz") as fh:
        (folder / "bed1_projections.dcm").write_bytes(fh.read())
    content = scan_study(folder, cache_dir=tmp_path / "cache")
    assert [v["key"] for v in content.manifest["volumes"]] == ["ct_nomar"]
    assert any("projections, not a reconstruction" in p for p in content.manifest["problems"])
    served = read_nifti(content.files["ct_nomar.nii.gz"])
    ct = read_ct_series(folder / "CT")
    assert served.data.dtype == np.int16 and np.array_equal(served.data, ct.data)
    assert np.allclose(served.affine, ct.affine, atol=1e-3)
