"""What every layer needs to know about a project's name (issue 24): the one rule, and where it goes in a URL.

Standard library only (Python 3.9: the client and the Slicer panel import it). A project is one lesion task
on a server (its label schema, cases, jobs, models and current model); the server stores it, this module
only says which names are valid and how a request path names one. ``DEFAULT_PROJECT`` and ``PROJECT_ENV``
live with the roles in ``permissions``.
"""

from __future__ import annotations

import re

from BackSplitLib.permissions import DEFAULT_PROJECT

#: Lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 64 characters: a name
#: that is safe in a URL path and a file name, and that two people cannot spell two ways ("Liver" / "liver").
PROJECT_NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"
_NAME = re.compile(PROJECT_NAME_PATTERN)
#: The path parameter that names a request's project (the server's routes, its front door, its audit rows).
PROJECT_PARAM = "project"
#: Where a project's routes live: ``/projects/{project}/cases`` ...; today's routes are the default project's.
PROJECT_PREFIX = f"/projects/{{{PROJECT_PARAM}}}"


def project_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid project name (one sentence), or None when it is."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name)[:80]
        return (f"project name {shown} is not valid: use 1 to 64 lower-case letters, digits, '-' or '_', "
                "starting with a letter or digit (e.g. liver-mets)")
    return None


def project_path(project: str, path: str) -> str:
    """The request path of ``path`` (``/cases`` ...) in ``project``; the default project keeps today's paths,
    so a client of the default project also works with servers from before projects existed."""
    if project == DEFAULT_PROJECT:
        return path
    return PROJECT_PREFIX.format(**{PROJECT_PARAM: project}) + path
