"""``backsplit web``: the browser face (trame-slicer), installed with the ``[web]`` extra."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from BackSplitLib.cli.app import app, console
from BackSplitLib.errors import BackSplitError
from BackSplitLib.vocabulary import DEFAULT_SERVER_URL, SERVER_ENV, TOKEN_ENV


@app.command()
def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (a non-loopback address makes "
                                                         "every browser type the server token)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port of the page (0: any free port)."),
    server: str = typer.Option(DEFAULT_SERVER_URL, "--server", envvar=SERVER_ENV, show_envvar=True,
                               help="URL of the BackSplit server that trains and predicts."),
    max_upload: str = typer.Option("2G", "--max-upload", help="Largest volume a browser may upload (bytes or "
                                                              "500M / 2G)."),
    work_dir: Path = typer.Option(None, "--work-dir", file_okay=False,
                                  help="Folder for uploads in progress (default: a new temporary folder)."),
) -> None:
    """Serve BackSplit in the browser: segment editor, roles, fine-tune and predict on a BackSplit server.

    The server token comes from $BACKSPLIT_TOKEN (only when listening on loopback) or is typed in the page.
    Open the URL printed when the app is ready: it carries this launch's secret.
    """
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen, no X server
    try:
        from BackSplitWeb.app import WebApp, WebSettings
        from BackSplitWeb.login import take_startup_token
    except ImportError as e:
        raise BackSplitError(f"the web app's packages are not installed ({e.name})",
                             "install the web extra (README, 'BackSplit in the browser')") from None
    from BackSplitLib.server.uploads import parse_size

    ignored = bool(os.environ.get(TOKEN_ENV))
    token = take_startup_token(host)  # read once; gone from the environment from here on
    settings = WebSettings(host=host, port=port, server_url=server, token=token,
                           max_upload=parse_size(max_upload), work_dir=work_dir)
    if ignored and settings.token is None:
        console.print("BACKSPLIT_TOKEN is ignored: the app listens on a non-loopback address, so every browser "
                      "types the token.")
    WebApp(settings).start()
