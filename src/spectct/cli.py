"""The `spectct` command line. It only parses arguments and calls library functions.

Each subcommand lives in its own module under ``spectct.commands`` with a ``register(app)`` function,
so commands are added without touching this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from spectct import __version__
from spectct.errors import SpectCTError

app = typer.Typer(
    name="spectct",
    help="SPECT/CT simulation, reconstruction, metal artifact reduction and reading.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spectct {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """spectct: a SPECT/CT system in software."""


def _register_commands() -> None:
    import spectct.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"spectct.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()


def main() -> None:
    """Console entry point: a :class:`SpectCTError` becomes one line on stderr and exit code 2."""
    try:
        app()
    except SpectCTError as exc:
        Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
