"""The typer app, its global options and the one place where errors become one-line messages."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from BackSplitLib import __version__
from BackSplitLib.errors import BackSplitError

app = typer.Typer(
    name="backsplit",
    help="BackSplit: small-lesion segmentation with the background split into auxiliary classes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
_DEBUG = {"on": False}

# Command groups register themselves on import; a group whose optional dependencies are missing is
# skipped so that the rest of the CLI still works.
COMMAND_MODULES = ("engine", "auxiliary", "remote", "accounts", "bench", "web")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"backsplit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _DEBUG["on"] = debug


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"BackSplitLib.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("BackSplitLib.cli"):
                continue  # the group is not written yet
            raise


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: runs the app and turns known errors into one line (traceback with --debug)."""
    _load_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="backsplit", standalone_mode=False)
        # Without standalone mode, typer returns typer.Exit's code instead of raising it.
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    except BackSplitError as e:
        if debug:
            raise
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    except Exception as e:  # click usage errors and anything unexpected
        # typer vendors its own click, so usage errors are recognised by shape, not by class.
        if type(e).__name__ == "Abort":
            return 130
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        if debug:
            raise
        console.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (rerun with --debug for the traceback"
                      " and please report it)", highlight=False, soft_wrap=True)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
