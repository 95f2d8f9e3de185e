"""`spectct view STUDY`: the interactive fused SPECT/CT viewer in the browser (local server, NiiVue page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view(
        study: Annotated[Path, typer.Argument(help="Study folder (pipeline layout) or a folder of DICOM CT/NM files.")],
        port: Annotated[int, typer.Option("--port", "-p", help="TCP port; 0 picks a free one.")] = 8765,
        host: Annotated[
            str | None,
            typer.Option("--host", help="Address to bind. Default 127.0.0.1; any other address must be given "
                                        "here explicitly and exposes the study to that network."),
        ] = None,
        no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a web browser.")] = False,
        cache: Annotated[
            Path | None,
            typer.Option("--cache", help="Folder for NIfTI conversions of DICOM-only studies "
                                         "(default STUDY/.spectct-view-cache)."),
        ] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    ) -> None:
        """Serve a fused SPECT/CT viewer for STUDY on http://127.0.0.1:PORT/ until Ctrl-C."""
        from spectct.progress import Reporter
        from spectct.viewer.server import serve

        reporter = Reporter(quiet=quiet)
        serve(study, host=host or "127.0.0.1", port=port, open_browser=not no_browser,
              allow_remote=host is not None, cache_dir=cache, reporter=reporter)
