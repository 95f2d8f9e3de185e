"""DICOM writers: NM tomo acquisition, reconstructed SPECT (NM RECON TOMO), derived CT, SEG, SR, SC.

Patient and study identifiers are copied from a reference object (the CT or the acquisition) when one
is given; otherwise a fresh anonymous study is made. Every new series, instance and (where no CT
gives one) frame-of-reference UID comes from :func:`pydicom.uid.generate_uid`. Every file is written
atomically, every series folder appears whole or not at all.

The NM objects follow PS3.3 A.5 (NM Image IOD): the acquisition carries the NM Detector, NM TOMO
Acquisition and Energy Window modules that :mod:`spectct.io.dicom_nm` reads back; the reconstruction
is Image Type ``DERIVED\\PRIMARY\\RECON TOMO\\EMISSION`` with one frame per slice
(FrameIncrementPointer = SliceVector) and the volume's geometry in the Detector Information Sequence
(ImagePositionPatient of the first slice, ImageOrientationPatient) plus SpacingBetweenSlices, which is
how ITK/GDCM and dcm2niix place NM volumes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from spectct import __version__
from spectct.atomic import atomic_dir, atomic_path
from spectct.errors import GeometryError, InputError
from spectct.io.dicom_common import (
    CT_IMAGE_STORAGE,
    NM_IMAGE_STORAGE,
    PATIENT_KEYWORDS,
    STUDY_KEYWORDS,
    read_dataset,
)
from spectct.progress import SILENT, Reporter
from spectct.volume import Volume

MANUFACTURER = "spectct"
MODEL = "spectct software"


# ----------------------------------------------------------------------------- helpers
def _ds(x: float) -> DSfloat:
    """A DS value holding ``x`` to the 16 characters DICOM allows."""
    return DSfloat(float(x), auto_format=True)


def _ds_list(values) -> list[DSfloat]:
    return [_ds(v) for v in np.asarray(values, dtype=float).ravel()]


def _reference_dataset(reference: Any) -> Dataset | None:
    """A header to copy identifiers from: a Dataset, a DICOM file, a folder (its first DICOM file), a list."""
    if reference is None:
        return None
    if isinstance(reference, Dataset):
        return reference
    if isinstance(reference, (list, tuple)):
        return _reference_dataset(reference[0]) if reference else None
    path = Path(reference)
    if path.is_dir():
        from spectct.io.dicom_ct import ct_series_headers

        return ct_series_headers(path)[0]
    return read_dataset(path, stop_before_pixels=True)


def _new_dataset(
    sop_class: str,
    modality: str,
    reference: Dataset | None,
    patient: dict | None,
    series_description: str,
    series_number: int,
    now: dt.datetime,
) -> Dataset:
    """File meta, SOP Common, Patient, General Study/Series/Equipment modules."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # patient + study: copied from the reference, overridden by ``patient``
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    if reference is not None:
        for kw in PATIENT_KEYWORDS + STUDY_KEYWORDS:
            if kw in reference and reference.get(kw) not in (None, ""):
                setattr(ds, kw, reference.get(kw))
    for kw, value in (patient or {}).items():
        try:
            setattr(ds, kw, value)
        except Exception:
            raise InputError(f"patient/study attribute {kw!r} is not a DICOM keyword") from None
    ds.Modality = modality
    ds.Laterality = ""
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description[:64]
    ds.SeriesDate = now.strftime("%Y%m%d")
    ds.SeriesTime = now.strftime("%H%M%S")
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL
    ds.SoftwareVersions = __version__
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceNumber = 1
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _frame_of_reference(volume: Volume, reference: Dataset | None) -> str:
    if volume.frame_of_reference:
        return volume.frame_of_reference
    if reference is not None and reference.get("FrameOfReferenceUID"):
        return str(reference.FrameOfReferenceUID)
    return generate_uid()


# ----------------------------------------------------------------------------- NM acquisition
def write_nm_projections(
    projections,
    path: str | os.PathLike,
    patient: dict | None = None,
    reference: Any = None,
    acquisition_start: dt.datetime | None = None,
    series_description: str = "spectct SPECT acquisition",
    series_number: int = 1,
) -> Path:
    """Write ``Projections`` as one DICOM NM multi-frame TOMO acquisition.

    Parameters
    ----------
    projections : ``spectct.spect.geometry.Projections`` (counts [window, view, row, col]).
    path : output file (``.dcm``), written atomically.
    patient : DICOM keywords → values overriding the copied identifiers (e.g. ``{"PatientID": "X"}``).
    reference : Dataset, file or folder (e.g. the CT) whose patient/study identifiers are copied.
    acquisition_start : wall-clock start; default now. The injection time is written as
        ``acquisition_start − start_time_after_injection_s`` so that the reader recovers the delay.

    Notes
    -----
    Frames are window-major (FrameIncrementPointer = EnergyWindowVector, DetectorVector, RotationVector,
    AngularViewVector, like GE). Integer counts up to 65535 are stored exactly as uint16; other counts
    are scaled with RescaleSlope (and are then exact to 1/65535 of the maximum).
    """
    path = Path(path)
    g = projections.geometry
    d = g.to_dicom()
    heads, stops = max(1, g.heads), d["stops_per_head"]
    counts = np.asarray(projections.counts, dtype=np.float64)
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise InputError("projection counts must be finite and ≥ 0 to be written as DICOM NM")
    # check that the angles are representable as start ± k·step per head
    rebuilt = type(g).from_dicom_angles(
        d["start_angles_deg"],
        d["angular_step_deg"],
        d["rotation_direction"],
        stops,
        d["radial_positions_mm"],
        g.n_rows,
        g.n_cols,
        g.pixel_mm,
        g.time_per_view_s,
        g.windows,
    )
    diff = np.abs((rebuilt.angles_deg - g.angles_deg + 180.0) % 360.0 - 180.0)
    if diff.max() > 1e-6:
        raise GeometryError(
            "view angles are not evenly stepped per head; DICOM NM TOMO cannot describe them "
            f"(largest deviation {diff.max():.4f}°)"
        )
    now = dt.datetime.now().replace(microsecond=0)
    start = acquisition_start or now
    ref = _reference_dataset(reference)
    ds = _new_dataset(NM_IMAGE_STORAGE, "NM", ref, patient, series_description, series_number, now)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    ds.AcquisitionDate = start.strftime("%Y%m%d")
    ds.AcquisitionTime = start.strftime("%H%M%S.%f")
    ds.FrameOfReferenceUID = (
        ref.FrameOfReferenceUID if ref is not None and "FrameOfReferenceUID" in ref else generate_uid()
    )
    ds.PositionReferenceIndicator = ""
    n_w = counts.shape[0]
    # [window, view(stop-major)] → [window, head, stop]
    frames = counts.reshape(n_w, stops, heads, g.n_rows, g.n_cols).transpose(0, 2, 1, 3, 4)
    frames = frames.reshape(-1, g.n_rows, g.n_cols)
    integer = np.all(frames == np.round(frames)) and frames.max(initial=0) <= 65535
    if integer:
        pixels = frames.astype(np.uint16)
    else:
        slope = frames.max() / 65535.0 if frames.max() > 0 else 1.0
        pixels = np.round(frames / slope).astype(np.uint16)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = 0
    n_frames = pixels.shape[0]
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = [0x00540010, 0x00540020, 0x00540050, 0x00540090]
    w_idx, h_idx, s_idx = np.meshgrid(np.arange(n_w), np.arange(heads), np.arange(stops), indexing="ij")
    ds.EnergyWindowVector = (w_idx.ravel() + 1).tolist()
    ds.DetectorVector = (h_idx.ravel() + 1).tolist()
    ds.RotationVector = [1] * n_frames
    ds.AngularViewVector = (s_idx.ravel() + 1).tolist()
    ds.NumberOfEnergyWindows = n_w
    ds.NumberOfDetectors = heads
    ds.NumberOfRotations = 1
    ds.EnergyWindowInformationSequence = DicomSequence([_energy_window_item(w) for w in g.windows])
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([_pharm_item(projections, start)])
    ds.DetectorInformationSequence = DicomSequence(
        [_detector_item(g, h, d["start_angles_deg"][h], d["radial_positions_mm"][h]) for h in range(heads)]
    )
    rot = Dataset()
    rot.StartAngle = _ds(d["start_angles_deg"][0])
    rot.AngularStep = _ds(d["angular_step_deg"])
    rot.RotationDirection = d["rotation_direction"]
    rot.ScanArc = _ds(d["angular_step_deg"] * stops)
    rot.ActualFrameDuration = int(round(g.time_per_view_s * 1000))
    rot.NumberOfFramesInRotation = stops
    rot.TableTraverse = _ds(0.0)
    rot.TableHeight = _ds(0.0)
    ds.RotationInformationSequence = DicomSequence([rot])
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"
    ds.PatientOrientationCodeSequence = DicomSequence(
        [
            _code(
                "102538003",
                "SCT",
                "recumbent",
                [("PatientOrientationModifierCodeSequence", _code("40199007", "SCT", "supine"))],
            )
        ]
    )
    ds.PatientGantryRelationshipCodeSequence = DicomSequence([_code("102540008", "SCT", "headfirst")])
    ds.CountsAccumulated = int(min(round(float(counts.sum())), 2**31 - 1))
    ds.ImageID = ""
    _set_pixels(ds, pixels, g.pixel_mm)
    return _save(ds, path)


def _code(value: str, scheme: str, meaning: str, nested: list | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    for kw, sub in nested or []:
        setattr(item, kw, DicomSequence([sub]))
    return item


def _energy_window_item(window) -> Dataset:
    rng = Dataset()
    rng.EnergyWindowLowerLimit = _ds(window.lower_kev)
    rng.EnergyWindowUpperLimit = _ds(window.upper_kev)
    item = Dataset()
    item.EnergyWindowRangeSequence = DicomSequence([rng])
    item.EnergyWindowName = str(window.name)[:16]
    return item


def _pharm_item(projections, start: dt.datetime) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = str(projections.radionuclide)
    item.RadionuclideCodeSequence = DicomSequence([])
    delay = float(projections.start_time_after_injection_s or 0.0)
    inj = start - dt.timedelta(seconds=delay)
    item.RadiopharmaceuticalStartDateTime = inj.strftime("%Y%m%d%H%M%S.%f")
    item.RadiopharmaceuticalStartTime = inj.strftime("%H%M%S.%f")
    if projections.injected_activity_bq:
        item.RadionuclideTotalDose = _ds(projections.injected_activity_bq / 1e6)  # NM IOD: MBq
    return item


def _detector_item(g, head: int, start_angle: float, radii) -> Dataset:
    item = Dataset()
    item.CollimatorGridName = "LEHR"
    item.CollimatorType = "PARA"
    item.FieldOfViewShape = "RECTANGLE"
    item.FieldOfViewDimensions = [int(round(g.n_cols * g.pixel_mm[1])), int(round(g.n_rows * g.pixel_mm[0]))]
    item.ZoomFactor = [_ds(1.0), _ds(1.0)]
    item.CenterOfRotationOffset = _ds(0.0)
    item.GantryDetectorTilt = _ds(0.0)
    item.StartAngle = _ds(start_angle)
    item.RadialPosition = _ds_list(radii)
    # detector image plane at the start angle: columns along e_u(θ) = (cos θ, −sin θ, 0) of spectct's
    # convention (the reader derives its 0°/180° offset from this), rows downwards, row 0 most superior
    theta = np.radians(start_angle)
    row = np.array([np.cos(theta), -np.sin(theta), 0.0])
    top = g.axial_center_mm + (g.n_rows - 1) / 2.0 * g.pixel_mm[0]
    ipp = -(g.n_cols - 1) / 2.0 * g.pixel_mm[1] * row + np.array([0.0, 0.0, top])
    item.ImagePositionPatient = _ds_list(ipp)
    item.ImageOrientationPatient = _ds_list([row[0], row[1], row[2], 0, 0, -1])
    return item


def _set_pixels(ds: Dataset, pixels: np.ndarray, pixel_mm) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.PixelSpacing = _ds_list(pixel_mm)
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()


# ----------------------------------------------------------------------------- reconstructed SPECT
def write_spect_series(
    volume_bq_ml: Volume,
    folder: str | os.PathLike,
    ct_reference: Any = None,
    patient: dict | None = None,
    series_description: str = "spectct SPECT Bq/mL",
    series_number: int = 3,
    radionuclide: str | None = None,
    filename: str = "spect_recon.dcm",
) -> Path:
    """Write a reconstructed SPECT volume (Bq/mL) as a DICOM NM RECON TOMO object in ``folder``.

    Parameters
    ----------
    volume_bq_ml : the reconstruction on any (orthonormal) grid; unit should be ``"Bq/mL"``.
    folder : output folder; the file ``filename`` in it is written atomically.
    ct_reference : the CT folder, file or Dataset whose patient, study and frame of reference are used.
    patient : keyword overrides for identifiers.

    Notes
    -----
    Values are stored as uint16 with RescaleSlope = max / 65535 Bq/mL per unit (relative precision
    1.5e-5 of the maximum), RescaleType "BQML" tells viewers the unit. One frame per slice in the
    volume's slice order.
    """
    vol = volume_bq_ml
    if vol.unit not in ("Bq/mL", "counts", "1"):
        raise InputError(f"SPECT series must be in Bq/mL (or counts), got unit {vol.unit!r}")
    data = np.asarray(vol.data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise InputError("SPECT volume contains NaN or infinite values")
    data = np.clip(data, 0.0, None)
    ref = _reference_dataset(ct_reference)
    now = dt.datetime.now().replace(microsecond=0)
    ds = _new_dataset(NM_IMAGE_STORAGE, "NM", ref, patient, series_description, series_number, now)
    ds.ImageType = ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.FrameOfReferenceUID = _frame_of_reference(vol, ref)
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionDate = now.strftime("%Y%m%d")
    ds.AcquisitionTime = now.strftime("%H%M%S")
    maximum = float(data.max())
    slope = maximum / 65535.0 if maximum > 0 else 1.0
    pixels = np.round(data / slope).astype(np.uint16)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = 0
    ds.RescaleType = "BQML" if vol.unit == "Bq/mL" else "US"
    nz, ny, nx = vol.shape
    dz, dy, dx = vol.spacing
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = [0x00540080]  # SliceVector
    ds.SliceVector = list(range(1, nz + 1))
    ds.NumberOfSlices = nz
    ds.SliceThickness = _ds(dz)
    ds.SpacingBetweenSlices = _ds(dz)
    det = Dataset()
    det.ImagePositionPatient = _ds_list(vol.origin)
    det.ImageOrientationPatient = _ds_list(np.concatenate([vol.direction[:, 0], vol.direction[:, 1]]))
    det.CollimatorType = "PARA"
    ds.DetectorInformationSequence = DicomSequence([det])
    ds.NumberOfDetectors = 1
    ds.EnergyWindowInformationSequence = DicomSequence([])
    ds.NumberOfEnergyWindows = 1
    pharm = Dataset()
    pharm.Radiopharmaceutical = radionuclide or ""
    pharm.RadionuclideCodeSequence = DicomSequence([])
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([pharm])
    ds.PatientOrientationCodeSequence = DicomSequence([])
    ds.PatientGantryRelationshipCodeSequence = DicomSequence([])
    ds.TypeOfDetectorMotion = ""
    ds.ImageID = ""
    # the rotation module is required for TOMO images; it describes nothing here but must be present
    ds.RotationInformationSequence = DicomSequence([])
    ds.NumberOfRotations = 1
    ds.CountsAccumulated = ""
    _set_pixels(ds, pixels, (dy, dx))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _save(ds, folder / filename)


# ----------------------------------------------------------------------------- derived CT
def write_ct_series(
    volume_hu: Volume,
    folder: str | os.PathLike,
    derived_from: Any = None,
    description: str = "spectct CT",
    patient: dict | None = None,
    series_number: int = 2,
    reporter: Reporter | None = None,
) -> Path:
    """Write a CT volume in HU as a series of single-frame CT images (one file per slice) in ``folder``.

    Parameters
    ----------
    volume_hu : the CT (unit HU) on any orthonormal grid.
    folder : output folder, replaced atomically as a whole.
    derived_from : the source CT (folder, file, Datasets); its identifiers and frame of reference are
        kept, ImageType becomes DERIVED\\SECONDARY\\AXIAL and the source series is referenced.
    description : SeriesDescription (e.g. "MAR CT").

    Notes
    -----
    Stored as int16 with RescaleIntercept 0, RescaleSlope 1 (HU rounded to integers, clipped to
    −32768..32767). Slice k is at ``origin + k·dz·direction[:, 2]``, so reading back recovers the grid.
    """
    reporter = reporter or SILENT
    vol = volume_hu
    if vol.unit != "HU":
        raise InputError(f"CT series must be in HU, got unit {vol.unit!r}")
    data = np.asarray(vol.data, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise InputError("CT volume contains NaN or infinite values")
    pixels = np.clip(np.round(data), -32768, 32767).astype(np.int16)
    ref = _reference_dataset(derived_from)
    now = dt.datetime.now().replace(microsecond=0)
    series_uid = generate_uid()
    frame_uid = _frame_of_reference(vol, ref)
    nz = vol.shape[0]
    dz, dy, dx = vol.spacing
    iop = _ds_list(np.concatenate([vol.direction[:, 0], vol.direction[:, 1]]))
    origin = np.asarray(vol.origin, dtype=float)
    normal = vol.direction[:, 2]
    base = _new_dataset(CT_IMAGE_STORAGE, "CT", ref, patient, description, series_number, now)
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        for k in reporter.track(range(nz), "writing CT slices", total=nz):
            ds = base.copy()
            ds.file_meta = base.file_meta.copy()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.ImageType = (
                ["DERIVED", "SECONDARY", "AXIAL"] if ref is not None else ["ORIGINAL", "PRIMARY", "AXIAL"]
            )
            if ref is not None:
                ds.DerivationDescription = description[:1024]
                src = Dataset()
                src.ReferencedSOPClassUID = ref.SOPClassUID
                src.ReferencedSOPInstanceUID = ref.SOPInstanceUID
                ds.SourceImageSequence = DicomSequence([src])
            ds.InstanceNumber = k + 1
            ds.AcquisitionNumber = 1
            ds.ImagePositionPatient = _ds_list(origin + k * dz * normal)
            ds.ImageOrientationPatient = iop
            ds.SliceThickness = _ds(dz)
            ds.SpacingBetweenSlices = _ds(dz)
            ds.SliceLocation = _ds(float((origin + k * dz * normal) @ normal))
            ds.PatientPosition = "HFS"
            ds.KVP = ref.get("KVP", "") if ref is not None else ""
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            _set_pixels(ds, pixels[k], (dy, dx))
            ds.BitsStored = 16
            ds.save_as(tmp / f"CT{k + 1:05d}.dcm", enforce_file_format=True)
    return folder


# ----------------------------------------------------------------------------- SEG, SR, SC
def _reference_ct_datasets(reference: Any) -> list[Dataset]:
    if isinstance(reference, (list, tuple)) and reference and isinstance(reference[0], Dataset):
        return list(reference)
    from spectct.io.dicom_ct import ct_series_headers

    path = Path(reference)
    if path.is_dir():
        return ct_series_headers(path)
    return [read_dataset(path, stop_before_pixels=True)]


def write_seg(
    masks: np.ndarray | Sequence[np.ndarray],
    names: Sequence[str],
    reference_ct: Any,
    path: str | os.PathLike,
    series_description: str = "spectct hot spots",
) -> Path:
    """Write binary masks on the CT grid as a DICOM Segmentation (highdicom), one segment per name.

    Parameters
    ----------
    masks : boolean ``[segment, z, y, x]`` (or a list of ``[z, y, x]``) on the reference CT's grid in the
        slice order of :func:`spectct.io.dicom_ct.read_ct_series` (ascending along the slice normal).
    names : segment labels (e.g. "hot spot 1").
    reference_ct : CT folder or its sorted headers (``ct_series_headers``).
    path : output ``.dcm``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _reference_ct_datasets(reference_ct)
    arr = np.asarray(masks).astype(bool)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[0] != len(names):
        raise InputError(f"{arr.shape[0]} masks but {len(names)} names")
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if arr.shape[1:] != (len(sources), rows, cols):
        raise GeometryError(
            f"masks have shape {arr.shape[1:]}, the reference CT is {(len(sources), rows, cols)}"
        )
    # highdicom wants [frame, row, col, segment]
    pixel = np.moveaxis(arr, 0, -1).astype(np.uint8)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=str(name)[:64],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="spectct", version=__version__, family=codes.DCM.ArtificialIntelligence
            ),
        )
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=20,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL,
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
    )
    path = Path(path)
    return _save(seg, path)


def write_sr(
    findings: Sequence[dict],
    reference_ct: Any,
    path: str | os.PathLike,
    title: str = "spectct SPECT/CT findings",
) -> Path:
    """Write findings as a DICOM Comprehensive 3D SR measurement report (TID 1500, highdicom).

    Each finding (a dict) becomes one Measurements group (TID 1501) with a tracking identifier naming
    it and its LPS position; numeric keys become measurements: ``volume_ml`` (SCT Volume, mL),
    ``peak_bq_ml`` and ``mean_bq_ml`` (Bq/mL), ``ratio`` (target-to-background, unitless). The text
    keys ``classification`` and ``nearest`` become qualitative text in the tracking identifier.
    Codes not in SNOMED/DCM use the private scheme ``99SPECTCT``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _reference_ct_datasets(reference_ct)
    private = {
        "peak_bq_ml": (
            hd.sr.CodedConcept("SPC001", "99SPECTCT", "Peak activity concentration"),
            codes.UCUM.BecquerelsPerMilliliter,
        ),
        "mean_bq_ml": (
            hd.sr.CodedConcept("SPC002", "99SPECTCT", "Mean activity concentration"),
            codes.UCUM.BecquerelsPerMilliliter,
        ),
        "ratio": (
            hd.sr.CodedConcept("SPC003", "99SPECTCT", "Target to background ratio"),
            hd.sr.CodedConcept("1", "UCUM", "no units"),
        ),
        "volume_ml": (codes.SCT.Volume, hd.sr.CodedConcept("ml", "UCUM", "milliliter")),
    }
    groups = []
    for i, f in enumerate(findings):
        pos = f.get("position_lps_mm") or f.get("position")
        label = str(f.get("name") or f"finding {i + 1}")
        if pos is not None:
            label += " at LPS ({:.1f}, {:.1f}, {:.1f}) mm".format(*map(float, pos))
        if f.get("classification"):
            label += f"; {f['classification']}"
        measurements = []
        for key, (concept, unit) in private.items():
            if f.get(key) is not None:
                measurements.append(hd.sr.Measurement(name=concept, value=float(f[key]), unit=unit))
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=label[:64]),
                finding_type=codes.DCM.Finding,
                measurements=measurements or None,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="spectct", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.SinglePhotonEmissionComputerizedTomography,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=30,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=title[:64],
    )
    return _save(sr, Path(path))


def write_secondary_capture(
    png_path: str | os.PathLike,
    path: str | os.PathLike,
    reference: Any = None,
    series_description: str = "spectct figure",
    series_number: int = 40,
) -> Path:
    """Write a PNG figure (RGB or grey) as a DICOM Secondary Capture image in the reference's study."""
    import highdicom as hd
    import imageio.v3 as iio

    png_path = Path(png_path)
    try:
        img = np.asarray(iio.imread(png_path))
    except Exception as exc:
        raise InputError(f"{png_path}: cannot read image ({exc})") from None
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img / max(1, img.max()) * 255, 0, 255).astype(np.uint8)
    ref = _reference_dataset(reference)
    ids = {kw: ref.get(kw) for kw in PATIENT_KEYWORDS + STUDY_KEYWORDS} if ref is not None else {}
    sc = hd.sc.SCImage(
        pixel_array=img,
        photometric_interpretation="RGB" if img.ndim == 3 else "MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=str(ids.get("StudyInstanceUID") or generate_uid()),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id=str(ids.get("PatientID") or ""),
        patient_name=str(ids.get("PatientName") or ""),
        patient_birth_date=str(ids.get("PatientBirthDate") or ""),
        patient_sex=str(ids.get("PatientSex") or "") or None,
        accession_number=str(ids.get("AccessionNumber") or ""),
        study_id=str(ids.get("StudyID") or ""),
        study_date=str(ids.get("StudyDate") or "") or None,
        study_time=str(ids.get("StudyTime") or "") or None,
        referring_physician_name=str(ids.get("ReferringPhysicianName") or ""),
        patient_orientation=("L", "F"),
        series_description=series_description[:64],
    )
    sc.Laterality = ""
    return _save(sc, Path(path))


# ----------------------------------------------------------------------------- a whole study
def _finding_masks(findings: list[dict], ct: Volume) -> tuple[np.ndarray, list[str]]:
    """Spherical masks on the CT grid, one per finding: centred on its peak, of its volume.

    The study keeps no hot-spot label image, so the SEG shows each focus as the sphere of equal volume
    at its peak position (documented in docs/dicom.md)."""
    masks, names = [], []
    for i, f in enumerate(findings):
        peak = f.get("peak_lps") or f.get("position_lps_mm")
        vol_ml = f.get("volume_ml")
        if peak is None or not vol_ml:
            continue
        radius = max((3.0 * float(vol_ml) * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0), max(ct.spacing))
        centre = ct.world_to_index(np.asarray(peak, dtype=float))
        half = np.ceil(radius / np.asarray(ct.spacing)).astype(int) + 1
        lo = np.maximum(np.floor(centre).astype(int) - half, 0)
        hi = np.minimum(np.ceil(centre).astype(int) + half + 1, ct.shape)
        mask = np.zeros(ct.shape, dtype=bool)
        if np.any(hi <= lo):
            continue
        kk, jj, ii = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        world = ct.index_to_world(np.stack([kk, jj, ii], axis=-1).astype(float))
        inside = np.linalg.norm(world - np.asarray(peak, dtype=float), axis=-1) <= radius
        mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside
        if mask.any():
            masks.append(mask)
            names.append(f"focus {f.get('id', i + 1)}")
    return (np.stack(masks) if masks else np.zeros((0,) + ct.shape, dtype=bool)), names


def export_study(
    study: str | os.PathLike,
    out: str | os.PathLike,
    patient: dict | None = None,
    reporter: Reporter | None = None,
) -> list[str]:
    """Write a study folder as one DICOM study in ``out`` (replaced atomically as a whole).

    Layout of ``out``: ``CT/`` (ct/ct_nomar.nii.gz), ``MAR_CT/`` (ct/ct_mar.nii.gz, derived from CT/),
    ``SPECT/spect_recon.dcm`` (spect/spect.nii.gz, NM RECON TOMO in Bq/mL in the CT's frame),
    ``NM/projections.dcm`` (spect/projections), ``SEG/hotspots.dcm`` and ``SR/findings.dcm``
    (findings.json), ``SC/<figure>.dcm`` (figures/*.png). Parts whose inputs are missing are skipped;
    at least one CT is required (it gives the frame of reference and the SEG/SR references).

    Returns the relative paths written.
    """
    from spectct.io.load import load_projections, load_volume

    reporter = reporter or SILENT
    study, out = Path(study), Path(out)
    if not study.is_dir():
        raise InputError(f"{study}: study folder does not exist")
    ct_path = next(
        (p for p in (study / "ct" / "ct_nomar.nii.gz", study / "ct" / "ct.nii.gz") if p.exists()), None
    )
    if ct_path is None:
        raise InputError(
            f"{study}: no CT (ct/ct_nomar.nii.gz) to export; the DICOM set needs its frame of reference"
        )
    patient = dict(patient or {})
    patient.setdefault("StudyInstanceUID", generate_uid())
    written: list[str] = []
    with atomic_dir(out) as tmp:
        ct = load_volume(ct_path, unit="HU")
        if ct.frame_of_reference is None:
            ct.frame_of_reference = generate_uid()
        reporter.info(f"CT {ct_path.name} → CT/")
        write_ct_series(
            ct, tmp / "CT", description="spectct CT", patient=patient, series_number=2, reporter=reporter
        )
        written.append("CT/")
        ct_headers = _reference_ct_datasets(tmp / "CT")
        mar = study / "ct" / "ct_mar.nii.gz"
        if mar.exists():
            mar_ct = load_volume(mar, unit="HU")
            mar_ct.frame_of_reference = ct.frame_of_reference
            write_ct_series(
                mar_ct,
                tmp / "MAR_CT",
                derived_from=ct_headers,
                description="spectct MAR CT",
                patient=patient,
                series_number=3,
                reporter=reporter,
            )
            written.append("MAR_CT/")
        spect = study / "spect" / "spect.nii.gz"
        if spect.exists():
            vol = load_volume(spect, unit="Bq/mL")
            vol.frame_of_reference = ct.frame_of_reference
            write_spect_series(
                vol, tmp / "SPECT", ct_reference=ct_headers[0], patient=patient, series_number=4
            )
            written.append("SPECT/spect_recon.dcm")
        proj_dir = study / "spect" / "projections"
        if proj_dir.is_dir() and any(proj_dir.iterdir()):
            projections = load_projections(proj_dir)
            (tmp / "NM").mkdir()
            write_nm_projections(
                projections,
                tmp / "NM" / "projections.dcm",
                patient=patient,
                reference=ct_headers[0],
                series_number=5,
            )
            written.append("NM/projections.dcm")
        findings_path = study / "findings.json"
        if findings_path.exists():
            try:
                doc = json.loads(findings_path.read_text())
            except ValueError as exc:
                raise InputError(f"{findings_path}: not valid JSON ({exc})") from None
            findings = doc.get("findings", []) if isinstance(doc, dict) else []
            masks, names = _finding_masks(findings, ct)
            if names:
                (tmp / "SEG").mkdir()
                write_seg(masks, names, ct_headers, tmp / "SEG" / "hotspots.dcm")
                written.append("SEG/hotspots.dcm")
            (tmp / "SR").mkdir()
            sr_findings = [
                {
                    "name": f"focus {f.get('id', i + 1)}",
                    "position_lps_mm": f.get("peak_lps"),
                    "peak_bq_ml": f.get("peak_bq_ml"),
                    "mean_bq_ml": f.get("mean_bq_ml"),
                    "volume_ml": f.get("volume_ml"),
                    "ratio": f.get("ratio_to_background"),
                    "classification": f.get("classification"),
                }
                for i, f in enumerate(findings)
            ]
            write_sr(sr_findings, ct_headers, tmp / "SR" / "findings.dcm")
            written.append("SR/findings.dcm")
        figures = sorted((study / "figures").glob("*.png")) if (study / "figures").is_dir() else []
        if figures:
            (tmp / "SC").mkdir()
            for n, png in enumerate(figures):
                write_secondary_capture(
                    png,
                    tmp / "SC" / f"{png.stem}.dcm",
                    reference=ct_headers[0],
                    series_description=png.stem,
                    series_number=40 + n,
                )
                written.append(f"SC/{png.stem}.dcm")
    return written
