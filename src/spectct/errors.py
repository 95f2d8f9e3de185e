"""Error types. Every message names the input it is about; the CLI prints it and exits 2."""


class SpectCTError(Exception):
    """Base class of every error spectct raises on purpose."""


class InputError(SpectCTError):
    """An input file or value is malformed, incomplete or out of range."""


class GeometryError(SpectCTError):
    """Grids, frames of reference or orientations that do not fit together."""


class OutputError(SpectCTError):
    """An output cannot be written (unwritable folder, newer study format ...)."""
