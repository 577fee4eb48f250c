"""HTTP client for the BackSplit server. Standard library only: it runs inside Slicer's Python.

::

    client = BackSplitClient("http://gpu-box:8765", token="...")      # or BackSplitClient.from_env(...)
    client.project = "liver-mets"                                       # default: $BACKSPLIT_PROJECT, else "default"
    case = client.upload_case("ct.nii.gz", "label.nii.gz", schema)     # schema: dict, JSON text or LabelSchema
    job = client.create_job("finetune", iterations=200)
    for event, data in client.events(job["id"]):                        # server-sent events until the job ends
        print(event, data["iteration"], data["loss"])
    client.predict("new_ct.nii.gz", "lesion.nii.gz")

Every case, job, model and predict call goes to the client's ``project`` (``/projects/{project}/...``; the
default project keeps today's paths, so it also works with servers from before projects). ``list_projects``,
``create_project`` and ``get_project`` manage projects; ``in_project(name)`` is a copy for another project.
``me()`` says who the token is and its role per project; ``audit(...)`` reads the audit log (admins).

Uploads stream from disk (multipart built by hand, never the whole file in memory); downloads stream to
a temporary file that is renamed when complete. Connection errors are retried (a POST only when nothing
was sent); every server error raises ``BackSplitClientError(status, detail)`` with the server's sentence.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from BackSplitLib.atomic import atomic_file
from BackSplitLib.permissions import DEFAULT_PROJECT, PROJECT_ENV
from BackSplitLib.projects import project_name_problem, project_path
from BackSplitLib.run_folder import pack_run, unpack_run
from BackSplitLib.vocabulary import DEFAULT_SERVER_URL as DEFAULT_SERVER
from BackSplitLib.vocabulary import CLIENT_HEADER, SERVER_ENV, TERMINAL_STATES, TOKEN_ENV

CHUNK = 1 << 20


class BackSplitClientError(Exception):
    """The server refused a request (``status`` is the HTTP status) or could not be reached (``status`` None)."""

    def __init__(self, status: int | None, detail: str):
        super().__init__(f"{detail} (HTTP {status})" if status else detail)
        self.status = status
        self.detail = detail


def read_token(token_file: str | Path | None = None) -> str | None:
    """The token from ``token_file`` when given, else from the BACKSPLIT_TOKEN environment variable."""
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise BackSplitClientError(None, f"token file {path} does not exist")
        return path.read_text().strip() or None
    return os.environ.get(TOKEN_ENV) or None


class _Multipart:
    """A multipart/form-data body streamed from files, with its exact length known up front."""

    def __init__(self, fields: dict[str, str], files: dict[str, Path]):
        self.boundary = f"backsplit-{uuid.uuid4().hex}"
        self.fields, self.files = fields, files

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, name: str, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        extra = "Content-Type: application/octet-stream\r\n" if filename else ""
        return f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode()

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def __len__(self) -> int:
        n = sum(len(self._head(k)) + len(v.encode()) + 2 for k, v in self.fields.items())
        n += sum(len(self._head(k, p.name.replace('"', "_"))) + p.stat().st_size + 2 for k, p in self.files.items())
        return n + len(self._tail())

    def chunks(self) -> Iterator[bytes]:
        for name, value in self.fields.items():
            yield self._head(name) + value.encode() + b"\r\n"
        for name, path in self.files.items():
            yield self._head(name, path.name.replace('"', "_"))
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield self._tail()


class BackSplitClient:
    """One server and one project on it. ``timeout`` is the socket timeout per request (uploads and predictions
    get more). ``project``: the project of every case, job, model and predict call (None: $BACKSPLIT_PROJECT,
    else the default project)."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, ca_file: str | Path | None = None,
                 project: str | None = None):
        parts = urlsplit(server if "://" in server else f"http://{server}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackSplitClientError(None, f"server address {server!r} is not an http(s) URL")
        self.server = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.ca_file = str(ca_file) if ca_file else None  # a hospital's own CA bundle for HTTPS servers
        self.project = project if project is not None else (os.environ.get(PROJECT_ENV) or DEFAULT_PROJECT)

    @property
    def project(self) -> str:
        """The project of every case, job, model and predict call; set it to switch projects."""
        return self._project

    @project.setter
    def project(self, name: str) -> None:
        problem = project_name_problem(name)
        if problem is not None:
            raise BackSplitClientError(None, problem)
        self._project = name

    def in_project(self, name: str) -> BackSplitClient:
        """A copy of this client (same server and token) for project ``name``."""
        other = copy.copy(self)
        other.project = name
        return other

    def _in(self, path: str) -> str:
        """``path`` (``/cases`` ...) in the client's project."""
        return project_path(self.project, path)

    @classmethod
    def from_env(cls, server: str | None = None, token_file: str | Path | None = None, **kwargs) -> BackSplitClient:
        """Server from the argument or BACKSPLIT_SERVER; token from ``token_file`` or BACKSPLIT_TOKEN; project from
        ``project=`` or BACKSPLIT_PROJECT."""
        return cls(server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER, read_token(token_file), **kwargs)

    # ------------------------------------------------------------------ transport
    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context(cafile=self.ca_file))
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _open(self, method: str, path: str, *, body: bytes | _Multipart | None = None,
              headers: dict[str, str] | None = None, timeout: float | None = None) -> http.client.HTTPResponse:
        """Send one request and return the open response (status < 400); retries connection failures."""
        headers = {CLIENT_HEADER: "backsplit-client", **(headers or {})}  # a --no-auth server's proof of a real client
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        idempotent = method in ("GET", "HEAD", "DELETE")
        attempt = 0
        while True:
            attempt += 1
            conn = self._connection(timeout or self.timeout)
            sent = False
            try:
                conn.connect()
                sent = True  # from here on, the server may have acted on a POST
                response = self._send(conn, method, self._prefix + path, body, headers)
            except (ConnectionRefusedError, socket.gaierror) as e:
                conn.close()
                if attempt > self.retries:
                    raise BackSplitClientError(None, f"cannot reach the BackSplit server at {self.server} ({e})") from None
            except (ConnectionError, http.client.HTTPException, TimeoutError, OSError) as e:
                conn.close()
                if not (idempotent or not sent) or attempt > self.retries:
                    what = "timed out" if isinstance(e, TimeoutError) else f"failed ({type(e).__name__}: {e})"
                    raise BackSplitClientError(None, f"the request {method} {path} to {self.server} {what}") from None
            else:
                if response.status == 429 and attempt <= self.retries:  # busy, nothing done: try again later
                    retry_after = response.getheader("Retry-After", "")
                    _close_quietly(response, conn)
                    time.sleep(min(float(retry_after), 30.0) if retry_after.isdigit() else self.backoff_s * 2 ** attempt)
                    continue
                if response.status >= 400:
                    raise _error_from(response, conn)
                response._backsplit_conn = conn  # type: ignore[attr-defined]  # closed with the response
                return response
            time.sleep(self.backoff_s * 2 ** (attempt - 1))

    @staticmethod
    def _send(conn: http.client.HTTPConnection, method: str, url: str, body, headers: dict) -> http.client.HTTPResponse:
        if isinstance(body, _Multipart):
            headers = {**headers, "Content-Type": body.content_type, "Content-Length": str(len(body))}
            try:
                conn.request(method, url, body=body.chunks(), headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # The server may refuse early (413, 415) and close while we are still sending: its
                # reply is usually already waiting on the socket.
                try:
                    return conn.getresponse()
                except Exception:
                    raise BackSplitClientError(
                        None, "the server closed the connection during the upload; the file may be larger than "
                              "its upload limit (see 'max_upload' in GET /health)") from None
            return conn.getresponse()
        conn.request(method, url, body=body, headers=headers)
        return conn.getresponse()

    def _json(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        response = self._open(method, path, body=body, headers=headers, timeout=timeout)
        try:
            data = response.read()
        finally:
            _close(response)
        return json.loads(data) if data else None

    def _upload(self, path: str, fields: dict[str, str], files: dict[str, Path], timeout: float | None = None):
        for name, file in files.items():
            if not Path(file).is_file():
                raise BackSplitClientError(None, f"{name} file {file} does not exist")
        body = _Multipart(fields, {k: Path(v) for k, v in files.items()})
        return self._open("POST", path, body=body, timeout=timeout or max(self.timeout, 600.0))

    # ------------------------------------------------------------------ server
    def health(self) -> dict:
        return self._json("GET", "/health")

    # ------------------------------------------------------------------ who
    def me(self) -> dict:
        """Who this token is: ``{"user", "admin", "projects": {PROJECT: ROLE}, "actions": {...}}``, the body
        ``permissions.may`` reads to decide what to enable."""
        return self._json("GET", "/me")

    def audit(self, **filters: Any) -> list[dict]:
        """The audit log (admins): filters user, project, action, since, until (ISO 8601 or epoch seconds)."""
        query = urlencode({k: v for k, v in filters.items() if v is not None})
        return self._json("GET", "/audit" + (f"?{query}" if query else ""))

    # ------------------------------------------------------------------ projects
    def list_projects(self) -> list[dict]:
        """The projects this token has a role in (an admin: every one): name, schema, target, current_model and
        their numbers of cases, jobs and models."""
        return self._json("GET", "/projects")

    def get_project(self, name: str | None = None) -> dict:
        """A project (default: the client's own)."""
        name = self.project if name is None else name
        problem = project_name_problem(name)
        if problem is not None:
            raise BackSplitClientError(None, problem)
        return self._json("GET", f"/projects/{quote(name)}")

    def create_project(self, name: str, schema: Any) -> dict:
        """A new project with its label schema (a dict, JSON text, a path to a JSON file or a LabelSchema)."""
        problem = project_name_problem(name)
        if problem is not None:
            raise BackSplitClientError(None, problem)
        return self._json("POST", "/projects", {"name": name, "schema": json.loads(_schema_text(schema))})

    # ------------------------------------------------------------------ cases
    def upload_case(self, image: str | Path, label: str | Path, schema: Any,
                    allow_empty_target: bool = False, modality: str | None = None) -> dict:
        """Upload one case; ``schema`` is a dict, JSON text, a path to a JSON file or a LabelSchema."""
        fields = {"schema": _schema_text(schema), "allow_empty_target": "true" if allow_empty_target else "false"}
        if modality:
            fields["modality"] = modality
        response = self._upload(self._in("/cases"), fields, {"image": Path(image), "label": Path(label)})
        return _read_json(response)

    def list_cases(self) -> list[dict]:
        return self._json("GET", self._in("/cases"))

    def get_case(self, case_id: str) -> dict:
        return self._json("GET", self._in(f"/cases/{quote(case_id)}"))

    def download_case(self, case_id: str, folder: str | Path) -> tuple[Path, Path]:
        """Save a stored case's image and label into ``folder``; returns (image, label)."""
        folder = Path(folder)
        files = []
        for which in ("image", "label"):
            response = self._open("GET", self._in(f"/cases/{quote(case_id)}/{which}"), timeout=max(self.timeout, 600.0))
            files.append(_save(response, folder / (_filename(response) or f"{case_id}_{which}")))
        return files[0], files[1]

    def delete_case(self, case_id: str) -> None:
        self._json("DELETE", self._in(f"/cases/{quote(case_id)}"))

    # ------------------------------------------------------------------ jobs
    def create_job(self, kind: str = "train", cases: list[str] | str = "all", base_model: str | None = None,
                   mode: str = "backsplit", iterations: int | None = None, arch: str = "unet",
                   auto_promote: bool = True, **extra: Any) -> dict:
        """Queue a job (kind 'train' or 'finetune'); extra keys: batch_size, val_every, patch_size, seed, ...
        ``iterations=None`` lets the server choose the kind's default (the fine-tune recipe's for a fine-tune)."""
        payload = {"kind": kind, "cases": cases, "base_model": base_model, "mode": mode, "iterations": iterations,
                   "arch": arch, "auto_promote": auto_promote, **{k: v for k, v in extra.items() if v is not None}}
        return self._json("POST", self._in("/jobs"), payload)

    def list_jobs(self) -> list[dict]:
        return self._json("GET", self._in("/jobs"))

    def get_job(self, job_id: str) -> dict:
        return self._json("GET", self._in(f"/jobs/{quote(job_id)}"))

    def cancel_job(self, job_id: str) -> dict:
        return self._json("DELETE", self._in(f"/jobs/{quote(job_id)}"))

    def events(self, job_id: str, read_timeout: float = 120.0) -> Iterator[tuple[str, dict]]:
        """The job's server-sent events as (event, job dict) until the job ends.

        A dropped connection (server restart) is reopened; the stream always starts with the current state,
        so nothing is missed that matters.
        """
        while True:
            ended = False
            try:
                response = self._open("GET", self._in(f"/jobs/{quote(job_id)}/events"),
                                      headers={"Accept": "text/event-stream"}, timeout=read_timeout)
                try:
                    for event, data in _parse_sse(response):
                        yield event, data
                        if event == "state" and data.get("state") in TERMINAL_STATES:
                            ended = True
                finally:
                    _close(response)
            except (ConnectionError, http.client.HTTPException, TimeoutError) as e:
                time.sleep(self.backoff_s)
                if self.get_job(job_id)["state"] in TERMINAL_STATES:  # retried on connection errors
                    ended = True
                elif isinstance(e, TimeoutError):
                    raise BackSplitClientError(None, f"no event from the server for {read_timeout:.0f} s") from None
            if ended:
                return

    def wait(self, job_id: str, on_event: Callable[[str, dict], None] | None = None) -> dict:
        """Follow a job's events until it ends; returns its final JSON."""
        last = None
        for event, data in self.events(job_id):
            last = data
            if on_event is not None:
                on_event(event, data)
        return last if last is not None else self.get_job(job_id)

    # ------------------------------------------------------------------ models
    def list_models(self) -> list[dict]:
        return self._json("GET", self._in("/models"))

    def get_model(self, model_id: str = "current") -> dict:
        return self._json("GET", self._in(f"/models/{quote(model_id)}"))

    def promote_model(self, model_id: str) -> dict:
        return self._json("POST", self._in(f"/models/{quote(model_id)}/promote"))

    def delete_model(self, model_id: str) -> None:
        self._json("DELETE", self._in(f"/models/{quote(model_id)}"))

    def download_model(self, model_id: str, dest: str | Path) -> Path:
        """Save the model's run folder as a zip (``dest`` a file, or a folder to extract it into)."""
        dest = Path(dest)
        response = self._open("GET", self._in(f"/models/{quote(model_id)}/download"), timeout=max(self.timeout, 600.0))
        if dest.suffix.lower() == ".zip":
            return _save(response, dest)
        with tempfile.TemporaryDirectory() as tmp:
            unpack_run(_save(response, Path(tmp) / "model.zip"), dest)
        return dest

    def upload_model(self, run: str | Path, promote: bool = False) -> dict:
        """Register a run folder (or its zip) trained elsewhere."""
        run = Path(run)
        with tempfile.TemporaryDirectory() as tmp:
            if run.is_dir():
                run = pack_run(run, Path(tmp) / f"{run.name}.zip")
            response = self._upload(self._in("/models"), {"promote": "true" if promote else "false"}, {"file": run})
            return _read_json(response)

    # ------------------------------------------------------------------ prediction
    def predict(self, image: str | Path, out: str | Path | None = None, model: str = "current",
                classes: bool = False) -> Path:
        """Lesion mask for ``image`` in its geometry and format (a zip with the class map when ``classes``).

        ``out`` is a file path or a folder (the server's file name is used); default: next to the image.
        """
        image = Path(image)
        response = self._upload(self._in(f"/predict{'?classes=true' if classes else ''}"), {"model": model}, {"image": image})
        name = _filename(response) or f"{image.name}.prediction"
        out = Path(out) if out is not None else image.parent / name
        if out.is_dir():
            out = out / name
        return _save(response, out)


# ---------------------------------------------------------------------- helpers
def _close_quietly(response: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> None:
    try:
        response.read()
    except (OSError, http.client.HTTPException):
        pass
    conn.close()


def _close(response: http.client.HTTPResponse) -> None:
    response.close()
    conn = getattr(response, "_backsplit_conn", None)
    if conn is not None:
        conn.close()


def _read_json(response: http.client.HTTPResponse) -> Any:
    try:
        return json.loads(response.read())
    finally:
        _close(response)


def _error_from(response: http.client.HTTPResponse, conn: http.client.HTTPConnection) -> BackSplitClientError:
    try:
        raw = response.read()
    except Exception:
        raw = b""
    finally:
        conn.close()
    try:
        detail = json.loads(raw)["detail"]
        detail = detail if isinstance(detail, str) else json.dumps(detail)
    except Exception:
        detail = raw.decode("utf-8", "replace").strip()[:300] or response.reason
    return BackSplitClientError(response.status, detail)


def _save(response: http.client.HTTPResponse, dest: Path) -> Path:
    """Stream a response body into ``dest`` through a temporary file (no half-written downloads)."""
    try:
        with atomic_file(dest) as tmp, open(tmp, "wb") as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
    finally:
        _close(response)
    return dest


def _filename(response: http.client.HTTPResponse) -> str | None:
    disposition = response.getheader("Content-Disposition") or ""
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename" and value:
            return Path(value.strip('"')).name
    return None


def _schema_text(schema: Any) -> str:
    if hasattr(schema, "to_dict"):
        return json.dumps(schema.to_dict())
    if isinstance(schema, dict):
        return json.dumps(schema)
    if isinstance(schema, Path) or (isinstance(schema, str) and not schema.lstrip().startswith("{")):
        path = Path(schema)
        if not path.is_file():
            raise BackSplitClientError(None, f"schema file {path} does not exist")
        return path.read_text()
    return str(schema)


def _parse_sse(lines: Iterable[bytes]) -> Iterator[tuple[str, dict]]:
    """Server-sent events (event/data lines, blank line ends one; ':' lines are keep-alives)."""
    event, data = "message", []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "data":
                data.append(value)
