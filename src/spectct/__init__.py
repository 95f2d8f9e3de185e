"""spectct: SPECT/CT simulation, reconstruction, metal artifact reduction and reading."""

__version__ = "0.1.0"

from spectct.errors import SpectCTError  # noqa: E402
from spectct.volume import Volume  # noqa: E402

__all__ = ["SpectCTError", "Volume", "__version__"]
