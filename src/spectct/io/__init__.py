"""Readers and writers: NIfTI, DICOM CT/NM, Interfile, DICOM outputs, the study folder."""
