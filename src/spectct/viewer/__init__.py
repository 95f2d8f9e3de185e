"""Interactive fused SPECT/CT viewer in the browser (``spectct view``), built on a vendored NiiVue bundle."""

from spectct.viewer.server import StudyContent, ViewerServer, make_server, scan_study, serve

__all__ = ["StudyContent", "ViewerServer", "make_server", "scan_study", "serve"]
