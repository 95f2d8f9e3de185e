"""Interfile 3.3: images and STIR/SIMIND-style SPECT projection headers, both ways."""

from __future__ import annotations

import numpy as np
import pytest

from spectct.errors import InputError
from spectct.io.interfile import (
    parse_header,
    read_image_interfile,
    read_projections_interfile,
    write_image_interfile,
    write_projections_interfile,
)
from spectct.io.load import load_projections, load_volume
from spectct.spect.geometry import Projections, SpectGeometry
from spectct.volume import Volume


def _projections(direction="CCW") -> Projections:
    rng = np.random.default_rng(5)
    g = SpectGeometry.dual_head(
        stops_per_head=6,
        radius_mm=240.0,
        matrix=8,
        pixel_mm=4.42,
        time_per_stop_s=15.0,
        start_angle_deg=33.0,
        direction=direction,
        radii_mm=rng.uniform(190, 260, 12),
        axial_center_mm=55.5,
    )
    return Projections(
        rng.poisson(4.0, (3, 12, 8, 8)).astype(np.float32),
        g,
        start_time_after_injection_s=3600.0,
        injected_activity_bq=5e8,
    )


def test_image_round_trip(tmp_path):
    v = Volume(
        np.random.default_rng(0).random((5, 6, 7)).astype(np.float32),
        spacing=(2.0, 3.0, 4.5),
        origin=(1.25, -2.5, 300.125),
        unit="Bq/mL",
        frame_of_reference="1.2.3.4",
    )
    back = read_image_interfile(write_image_interfile(v, tmp_path / "img.hv"))
    assert np.array_equal(back.data, v.data)
    assert back.same_grid(v, atol_mm=1e-9) and back.unit == "Bq/mL" and back.frame_of_reference == "1.2.3.4"
    assert load_volume(tmp_path / "img.hv").same_grid(v)


def test_foreign_image_header(tmp_path):
    """A STIR-style header without our comments: standard keys, big-endian shorts."""
    data = np.arange(4 * 3 * 2, dtype=">i2").reshape(2, 3, 4)
    data.tofile(tmp_path / "ext.v")
    (tmp_path / "ext.hv").write_text(
        "!INTERFILE  :=\n!name of data file := ext.v\nimagedata byte order := BIGENDIAN\n"
        "!number format := signed integer\n!number of bytes per pixel := 2\nnumber of dimensions := 3\n"
        "!matrix size [1] := 4\n!matrix size [2] := 3\n!matrix size [3] := 2\n"
        "scaling factor (mm/pixel) [1] := 2\nscaling factor (mm/pixel) [2] := 2\n"
        "scaling factor (mm/pixel) [3] := 5 ; a comment\n!END OF INTERFILE :=\n"
    )
    v = read_image_interfile(tmp_path / "ext.hv")
    assert np.array_equal(v.data, data.astype(np.float32))
    assert v.spacing == (5.0, 2.0, 2.0)
    assert np.allclose(v.center_world, 0.0)


@pytest.mark.parametrize("direction", ["CW", "CCW"])
def test_projection_round_trip(tmp_path, direction):
    p = _projections(direction)
    folder = write_projections_interfile(p, tmp_path / "proj")
    assert sorted(f.name for f in folder.glob("*.hs")) == [
        "projections_lower.hs",
        "projections_photopeak.hs",
        "projections_upper.hs",
    ]
    q = read_projections_interfile(folder)
    assert np.array_equal(q.counts, p.counts)
    assert np.array_equal(q.geometry.angles_deg, p.geometry.angles_deg)
    assert np.array_equal(q.geometry.radii_mm, p.geometry.radii_mm)
    assert q.geometry.windows == p.geometry.windows
    assert (q.geometry.heads, q.geometry.stops_per_head) == (2, 6)
    assert q.start_time_after_injection_s == 3600.0 and q.injected_activity_bq == 5e8
    one = read_projections_interfile(folder / "projections_photopeak.hs")
    assert np.array_equal(one.counts[0], p.window("photopeak"))
    assert np.array_equal(load_projections(folder).counts, p.counts)


def test_projection_file_is_in_rotation_order(tmp_path):
    """STIR and SIMIND read views as start + k·step: the data file must be in rotation order."""
    p = _projections("CW")
    folder = write_projections_interfile(p, tmp_path / "proj")
    keys, _ = parse_header(folder / "projections_photopeak.hs")
    n = int(keys["number of projections"])
    start, extent = float(keys["start angle"]), float(keys["extent of rotation"])
    angles = np.mod(start - extent / n * np.arange(n), 360.0)
    raw = np.fromfile(folder / "projections_photopeak.s", dtype="<f4").reshape(n, 8, 8)
    for k in range(n):
        v = int(np.argmin(np.abs((p.geometry.angles_deg - angles[k] + 180) % 360 - 180)))
        assert np.array_equal(raw[k], p.window("photopeak")[v])
    radii = [float(r) for r in keys["radius"].strip("{}").split(",")]
    assert len(radii) == n and keys["orbit"] == "non-circular"


def test_foreign_stir_projection_header(tmp_path):
    counts = np.random.default_rng(1).random((4, 3, 5)).astype(np.float32)
    counts.tofile(tmp_path / "s.s")
    (tmp_path / "s.hs").write_text(
        "!INTERFILE  :=\n!imaging modality := nucmed\nname of data file := s.s\n!version of keys := 3.3\n"
        "!GENERAL DATA :=\n!GENERAL IMAGE DATA :=\n!type of data := Tomographic\n"
        "imagedata byte order := LITTLEENDIAN\nisotope name := ^99m^Technetium\n"
        "energy window lower level[1] := 126\nenergy window upper level[1] := 154\n"
        "!SPECT STUDY (General) :=\n!number format := float\n!number of bytes per pixel := 4\n"
        "!number of projections := 4\n!extent of rotation := 360\nprocess status := acquired\n"
        "!SPECT STUDY (acquired data):=\n!direction of rotation := CW\nstart angle := 180\n"
        "orbit := Circular\n"
        "Radius := 150\n!matrix size [1] := 5\n!scaling factor (mm/pixel) [1] := 3.32\n"
        "!matrix size [2] := 3\n!scaling factor (mm/pixel) [2] := 6.64\n!END OF INTERFILE :=\n"
    )
    p = read_projections_interfile(tmp_path / "s.hs")
    assert np.array_equal(p.counts[0], counts)
    assert np.allclose(p.geometry.angles_deg, [180.0, 90.0, 0.0, 270.0])
    assert np.allclose(p.geometry.radii_mm, 150.0)
    assert p.geometry.pixel_mm == (6.64, 3.32)
    assert p.radionuclide == "Tc-99m"


def test_truncated_data_and_bad_header(tmp_path):
    p = _projections()
    folder = write_projections_interfile(p, tmp_path / "proj")
    data = folder / "projections_photopeak.s"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(InputError, match="truncated"):
        read_projections_interfile(folder / "projections_photopeak.hs")
    (tmp_path / "x.hs").write_text("hello\n")
    with pytest.raises(InputError, match="not an Interfile header"):
        read_projections_interfile(tmp_path / "x.hs")
    with pytest.raises(InputError, match="Interfile image headers end in .hv"):
        write_image_interfile(Volume(np.zeros((1, 1, 1)), spacing=(1, 1, 1)), tmp_path / "a.img")
