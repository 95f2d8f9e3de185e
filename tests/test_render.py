"""Rendering: orientation from LPS geometry, MPR/MIP placement, fused figures, VRT, planar, CLI."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from spectct.errors import GeometryError, InputError
from spectct.render import (
    fused_figure,
    mip,
    mpr_slices,
    planar_figure,
    ray_cast,
    rotating_mip,
    side_by_side,
    volume_render,
)
from spectct.render.annotate import edge_letters, nice_length, orientation_letter
from spectct.render.mpr import PLANE_AXES
from spectct.volume import Volume

BALL = np.array([14.0, -9.0, 7.0])  # LPS mm: patient left, anterior, superior of the centre


def _ball_volume(direction=None, unit="Bq/mL") -> Volume:
    """A 32³, 2-mm grid whose world content is a ball at BALL, whatever the direction matrix."""
    n, sp = 32, 2.0
    direction = np.eye(3) if direction is None else np.asarray(direction, float)
    centre_idx = np.full(3, (n - 1) / 2.0)
    origin = -(direction @ (sp * centre_idx))  # grid centred on the LPS origin
    vol = Volume(np.zeros((n, n, n), np.float32), spacing=(sp, sp, sp), origin=tuple(origin),
                 direction=direction, unit=unit)
    k, j, i = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    xyz = vol.index_to_world(np.stack([k, j, i], -1).astype(float))
    r2 = ((xyz - BALL) ** 2).sum(-1)
    return vol.with_data((1000.0 * np.exp(-r2 / (2 * 3.0**2))).astype(np.float32))


def _peak_display(sl) -> tuple[float, float]:
    r, c = np.unravel_index(int(np.argmax(sl.data)), sl.data.shape)
    left, right, bottom, top = sl.extent
    prow, pcol = sl.pixel_mm
    return left + (c + 0.5) * pcol, top - (r + 0.5) * prow


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_orientation_letters():
    assert orientation_letter((1, 0, 0)) == "L"
    assert orientation_letter((-1, 0, 0)) == "R"
    assert orientation_letter((0, -1, 0)) == "A"
    assert orientation_letter((0, 1, 0)) == "P"
    assert orientation_letter((0, 0, 1)) == "H"
    assert orientation_letter((0, 0, -2)) == "F"
    assert orientation_letter((0.6, 0.8, 0)) == "PL"
    with pytest.raises(InputError):
        orientation_letter((0, 0, 0))
    assert edge_letters(*PLANE_AXES["axial"]) == {"right": "L", "left": "R", "top": "A", "bottom": "P"}
    assert edge_letters(*PLANE_AXES["coronal"]) == {"right": "L", "left": "R", "top": "H", "bottom": "F"}
    assert edge_letters(*PLANE_AXES["sagittal"]) == {"right": "P", "left": "A", "top": "H", "bottom": "F"}
    assert nice_length(250.0) == 50.0 and nice_length(40.0) == 5.0


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.diag([1.0, -1.0, -1.0]),
                                       np.array([[0, 1.0, 0], [1.0, 0, 0], [0, 0, -1.0]])])
def test_mpr_places_ball_by_lps_not_array_order(direction):
    vol = _ball_volume(direction)
    planes = mpr_slices(vol, BALL)
    for name, sl in planes.items():
        assert sl.letters == edge_letters(*PLANE_AXES[name])
        u, v = _peak_display(sl)
        assert np.hypot(u, v) < 2.0, name  # the ball sits at the point of the planes
        assert sl.data.max() > 800
    # same world content → same axial image whatever the direction matrix
    ref = mpr_slices(_ball_volume(), BALL, planes=("axial",))["axial"]
    np.testing.assert_allclose(planes["axial"].data, ref.data, atol=1.0)
    with pytest.raises(GeometryError):
        mpr_slices(vol, (500.0, 0.0, 0.0))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0])])
def test_mip_views_put_the_ball_on_the_right_side(direction):
    vol = _ball_volume(direction)
    ant = mip(vol, 0.0)
    u, v = _peak_display(ant)
    assert ant.letters["left"] == "R" and ant.letters["top"] == "H"
    assert u > 8.0 and v > 3.0  # patient left (x > 0) shows on image right in the anterior view
    np.testing.assert_allclose((u, v), ant.to_display(BALL), atol=2.0)
    post = mip(vol, 180.0)
    assert post.letters["left"] == "L" and _peak_display(post)[0] < -8.0
    lat = mip(vol, 90.0)  # left lateral: anterior on image left
    assert lat.letters["left"] == "A" and _peak_display(lat)[0] < -5.0
    np.testing.assert_allclose(_peak_display(lat), lat.to_display(BALL), atol=2.0)
    assert 0.9 * vol.data.max() < ant.data.max() <= vol.data.max() + 1e-3  # interpolation never overshoots


def test_rotating_mip_writes_gif_and_strip(tmp_path):
    vol = _ball_volume()
    views = rotating_mip(vol, 8, tmp_path / "mip.gif", tmp_path / "strip.png", strip_views=4, dpi=50)
    assert len(views) == 8 and len({v.data.shape for v in views}) == 1
    frames = iio.imread(tmp_path / "mip.gif", index=None)
    assert frames.shape[0] == 8
    assert _is_png(tmp_path / "strip.png")


def _decode_mp4(path):
    """(metadata, frames) of an MP4, decoded by the ffmpeg that imageio-ffmpeg bundles."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader]
    return meta, frames


def test_rotating_mip_writes_mp4_with_one_frame_per_view(tmp_path):
    vol = _ball_volume()
    rotating_mip(vol, 6, path_mp4=tmp_path / "mip.mp4", dpi=41, frame_ms=125)  # dpi 41: odd pixel sizes
    meta, frames = _decode_mp4(tmp_path / "mip.mp4")
    assert len(frames) == 6
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"][0] % 2 == 0 and meta["size"][1] % 2 == 0
    assert meta["fps"] == pytest.approx(8.0)
    assert not list(tmp_path.glob(".*partial*"))  # written atomically
    # the ball is dark on the inverse-grey map: every frame shows it
    assert all(f.min() < 100 and np.median(f) > 200 for f in frames)


def test_write_mp4_pads_odd_frames_and_keeps_their_content(tmp_path):
    from spectct.render.mip import write_mp4

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    frames = [np.tile(np.array(c, np.uint8), (33, 51, 1)) for c in colours]
    write_mp4(frames, tmp_path / "c.mp4", fps=4.0)
    meta, out = _decode_mp4(tmp_path / "c.mp4")
    assert tuple(meta["size"]) == (52, 34) and len(out) == 3
    for f, c in zip(out, colours, strict=True):
        np.testing.assert_allclose(f[4:28, 4:46].reshape(-1, 3).mean(0), c, atol=12)
        assert f[-1, 4:46].mean() > 180  # padded row is white
    with pytest.raises(InputError):
        write_mp4([], tmp_path / "empty.mp4")
    with pytest.raises(InputError):
        write_mp4([np.zeros((4, 4), np.uint8)], tmp_path / "grey.mp4")
    assert not (tmp_path / "empty.mp4").exists()


def _femur_like(ct_mm=2.0):
    ct = Volume.from_bounds((-60, -40, -50), (60, 40, 50), ct_mm, unit="HU")
    z, y, x = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    d = np.full(ct.shape, -1000, np.float32)
    d[(x / 55) ** 2 + (y / 35) ** 2 < 1] = 30
    r = np.hypot(x + 25, y)
    d[r < 12] = 1200
    d[r < 7] = 80
    d[(r < 3.5) & (np.abs(z) < 40)] = 3000  # metal rod in the right femur (x < 0)
    d[np.hypot(x - 25, y) < 12] = 1200  # left femur, no metal
    sp = Volume.from_bounds((-60, -40, -50), (60, 40, 50), 4.0, unit="Bq/mL")
    zs, ys, xs = np.meshgrid(*sp.axis_coordinates(), indexing="ij")
    s = 5000 * np.exp(-((xs + 45) ** 2 + ys**2 + (zs - 10) ** 2) / (2 * 5.0**2))
    return ct.with_data(d), sp.with_data(s.astype(np.float32))


def test_fused_and_side_by_side_figures(tmp_path):
    ct, sp = _femur_like()
    out = fused_figure(ct, sp, None, path=tmp_path / "fused.png", title="test", dpi=50,
                       markers=[((-45.0, 0.0, 10.0), "focus")])
    assert _is_png(out) and iio.imread(out).shape[0] > 100
    out2 = side_by_side([ct, ct], (-25.0, 0.0, 0.0), tmp_path / "sbs.png", titles=("a", "b"), spect=sp,
                        dpi=50)
    assert _is_png(out2)
    far = Volume(np.ones((4, 4, 4), np.float32), (4, 4, 4), origin=(900, 0, 0), unit="Bq/mL")
    with pytest.raises(GeometryError):
        fused_figure(ct, far, None, path=tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(InputError):
        fused_figure(ct, sp, None, path=tmp_path / "bad.png", ct_window="lung-ish")


def test_vrt_colours_and_placement(tmp_path):
    ct, sp = _femur_like()
    img = ray_cast(ct, sp, 0.0)
    assert img.data.ndim == 3 and img.data.shape[2] == 3
    assert 0.0 <= img.data.min() and img.data.max() <= 1.0

    def pixel(point):
        u, v = img.to_display(point)
        left, _, _, top = img.extent
        pr, pc = img.pixel_mm
        return img.data[int((top - v) / pr), int((u - left) / pc)]

    rod, bone, hot, air = (pixel(p) for p in ((-25, 0, 0), (25, 0, 0), (-45, 0, 10), (0, 0, 0)))
    assert rod[2] - rod[0] > bone[2] - bone[0] + 0.05  # metal (blue-grey) shows through translucent bone
    assert bone[0] > bone[2] and bone.mean() > 0.3  # bone: ivory
    assert hot[0] > 0.5 and hot[0] - hot[2] > 0.3  # SPECT hot spot: warm colour, on the patient's right
    assert air.max() < 0.02  # background black
    assert pixel((-25, 0, 0))[2] > pixel((25, 0, 0))[2]  # the rod is in the right femur, image left
    out = volume_render(ct, sp, "left", tmp_path / "vrt.png", dpi=50)
    assert _is_png(out)
    with pytest.raises(InputError):
        volume_render(ct, sp, "sideways", tmp_path / "x.png")


def test_planar_figure(tmp_path):
    rng = np.random.default_rng(3)
    ant = rng.poisson(5.0, (64, 48))
    post = rng.poisson(4.0, (64, 48))
    assert _is_png(planar_figure(ant, post, 4.8, tmp_path / "planar.png", title="planar", dpi=50))
    with pytest.raises(InputError):
        planar_figure(ant, -post, 4.8, tmp_path / "bad.png")
    with pytest.raises(InputError):
        planar_figure(ant[0], post, 4.8, tmp_path / "bad.png")


def test_cli_render(tmp_path):
    from spectct.cli import app
    from spectct.io.nifti import write_nifti

    ct, sp = _femur_like(ct_mm=4.0)
    write_nifti(ct, tmp_path / "ct.nii.gz")
    write_nifti(sp, tmp_path / "spect.nii.gz")
    runner = CliRunner()
    res = runner.invoke(app, ["render", "fused", "--ct", str(tmp_path / "ct.nii.gz"), "--spect",
                              str(tmp_path / "spect.nii.gz"), "--out", str(tmp_path / "f.png"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert _is_png(tmp_path / "f.png")
    res = runner.invoke(app, ["render", "mip", "--volume", str(tmp_path / "spect.nii.gz"), "--angles", "0,90",
                              "--out", str(tmp_path / "m.png"), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["render", "fused", "--ct", str(tmp_path / "ct.nii.gz"), "--point", "1,2",
                              "--out", str(tmp_path / "g.png"), "--quiet"])
    assert isinstance(res.exception, InputError) and not (tmp_path / "g.png").exists()


def test_cli_render_mip_writes_mp4_next_to_gif(tmp_path):
    from spectct.cli import app
    from spectct.io.nifti import write_nifti

    write_nifti(_ball_volume(), tmp_path / "ball.nii.gz")
    runner = CliRunner()
    args = ["render", "mip", "--volume", str(tmp_path / "ball.nii.gz"), "--out", str(tmp_path / "m.png"),
            "--n-angles", "5", "--frame-ms", "250", "--quiet"]
    res = runner.invoke(app, [*args, "--gif", str(tmp_path / "r.gif"), "--mp4", str(tmp_path / "r.mp4")])
    assert res.exit_code == 0, res.output
    assert iio.imread(tmp_path / "r.gif", index=None).shape[0] == 5
    meta, frames = _decode_mp4(tmp_path / "r.mp4")
    assert len(frames) == 5 and meta["codec"].startswith("h264") and meta["fps"] == pytest.approx(4.0)
    assert all(f.min() < 100 for f in frames)  # the ball shows in every view
    res = runner.invoke(app, [*args, "--mp4", str(tmp_path / "r.gif")])  # wrong suffix: nothing written
    assert isinstance(res.exception, InputError) and "--mp4" in str(res.exception)
    res = runner.invoke(app, [*args, "--mp4", str(tmp_path / "z.mp4"), "--frame-ms", "0"])
    assert isinstance(res.exception, InputError) and not (tmp_path / "z.mp4").exists()


@pytest.mark.slow
def test_real_ct_anatomy_orientation(shared_data, tmp_path):
    """On the GE CT (thorax), the spine is posterior in the axial MPR and the figure and VRT are written."""
    import tarfile

    from spectct.io.load import load_volume

    with tarfile.open(shared_data / "ge-lu177-spectct" / "ct_series.tar.xz") as tar:
        tar.extractall(tmp_path, filter="data")
    ct = load_volume(tmp_path / "CT")
    axial = mpr_slices(ct, ct.center_world, planes=("axial",), step_mm=2.0)["axial"]
    assert axial.letters == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    rows, cols = np.nonzero(axial.data > 300)
    left, _, _, top = axial.extent
    prow, pcol = axial.pixel_mm
    u = left + (cols + 0.5) * pcol
    v = top - (rows + 0.5) * prow
    midline = np.abs(u) < 25
    assert (v[midline] < 0).sum() > 2 * (v[midline] > 0).sum()  # vertebrae behind the sternum
    assert _is_png(fused_figure(ct, None, ct.center_world, path=tmp_path / "mpr.png", dpi=50))
    assert _is_png(volume_render(ct, None, "anterior", tmp_path / "vrt.png", step_mm=3.0, dpi=50))


def test_vrt_emission_absorption_of_a_slab():
    """Unshaded metal slab of thickness T: the pixel is metal_rgb · (1 − exp(−κ T)) (Max 1995)."""
    from spectct.render.vrt import TransferFunction

    ct = Volume.from_bounds((-20, -30, -20), (20, 30, 20), 1.0, unit="HU")
    z, y, x = np.meshgrid(*ct.axis_coordinates(), indexing="ij")
    ct = ct.with_data(np.where(np.abs(y) < 10.0, 3000.0, -1000.0).astype(np.float32))  # 20 mm along the view
    kappa = 0.05
    tf = TransferFunction(bone_kappa=0.0, metal_kappa=kappa, ambient=1.0, diffuse=0.0, specular=0.0)
    img = ray_cast(ct, None, 0.0, step_mm=1.0, tf=tf)
    centre = img.data[img.data.shape[0] // 2, img.data.shape[1] // 2]
    expected = np.asarray(tf.metal_rgb) * (1.0 - np.exp(-kappa * 20.0))
    np.testing.assert_allclose(centre, expected, atol=0.03)
    side = ray_cast(ct, None, 90.0, step_mm=1.0, tf=tf)  # 40 mm of metal seen from the side
    c2 = side.data[side.data.shape[0] // 2, side.data.shape[1] // 2]
    np.testing.assert_allclose(c2, np.asarray(tf.metal_rgb) * (1.0 - np.exp(-kappa * 40.0)), atol=0.03)
