"""The run folder, its zip form and the prediction bundle: one owner for the layout. Standard library only.

::

    RUN/model.json          format_version, schema, arch + params, preprocessing, training settings, history
    RUN/model.safetensors   best-validation weights (used by predict)
    RUN/last.safetensors    latest weights   } resume after a kill
    RUN/last_state.pt       optimizer, scheduler, RNG states, iteration (loads with weights_only=True)
    RUN/log.jsonl           one JSON line per logged iteration

A run travels as a zip of that folder (``pack_run`` / ``unpack_run``: the server's model download and
upload, the client). A prediction with the class map travels as a *bundle*: a zip of the lesion mask, the
class map and ``schema.json``, with ``bundle.json`` naming each member (``write_prediction_bundle`` on the
server, ``read_prediction_bundle`` in the client and the Slicer module).

This module imports nothing outside the standard library (the client and the Slicer module use it inside
Slicer's Python 3.9); the weights (torch, safetensors) are in ``runs.py``.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Union

from BackSplitLib.atomic import atomic_file, write_json_atomic
from BackSplitLib.errors import RunError

if TYPE_CHECKING:
    from BackSplitLib.schema import LabelSchema

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
BEST_WEIGHTS = "model.safetensors"
LAST_WEIGHTS = "last.safetensors"
LAST_STATE = "last_state.pt"
LOG = "log.jsonl"

BUNDLE_MANIFEST = "bundle.json"
BUNDLE_SCHEMA = "schema.json"
MASK_SUFFIX = "_lesion"
CLASSES_SUFFIX = "_classes"
MAX_ARCHIVE_MEMBERS = 1000  # a run folder holds five files; thousands of members is not a run


class ArchiveTooLarge(RunError):
    """A zip that would unpack to more than the allowed bytes (the server answers 413)."""


# ---------------------------------------------------------------------- model.json
@dataclass
class RunInfo:
    """A loaded run folder's metadata."""

    path: Path
    meta: dict
    schema: LabelSchema

    @property
    def arch(self) -> str:
        return self.meta["arch"]["name"]

    @property
    def arch_params(self) -> dict:
        return dict(self.meta["arch"].get("params", {}))

    @property
    def preprocessing(self) -> dict:
        return self.meta["preprocessing"]

    def weights_path(self, which: str = "best") -> Path:
        path = self.path / (BEST_WEIGHTS if which == "best" else LAST_WEIGHTS)
        if not path.is_file():
            other = self.path / (LAST_WEIGHTS if which == "best" else BEST_WEIGHTS)
            if other.is_file():
                return other
            raise RunError(f"run {self.path} has no weights ({BEST_WEIGHTS})",
                           "the training did not finish a validation; resume it with --resume")
        return path


def read_model_json(run_dir: Union[str, Path]) -> dict:
    """RUN/model.json, checked for the keys and types every reader relies on; RunError otherwise."""
    run_dir = Path(run_dir)
    meta_path = run_dir / MODEL_JSON
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    if not meta_path.is_file():
        raise RunError(f"{run_dir} is not a BackSplit run folder (no {MODEL_JSON})",
                       "pass the folder written by 'backsplit train' or 'backsplit import-model'")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise RunError(f"{meta_path} is damaged ({getattr(e, 'msg', type(e).__name__)})") from None
    if not isinstance(meta, dict):
        raise RunError(f"{meta_path} is not a JSON object; it was not written by BackSplit")
    for key, kind in (("format_version", int), ("schema", dict), ("arch", dict), ("preprocessing", dict)):
        if key not in meta:
            raise RunError(f"{meta_path} lacks '{key}'; it was not written by BackSplit")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise RunError(f"'{key}' in {meta_path} is not {'an integer' if kind is int else 'an object'}")
    if not isinstance(meta["arch"].get("name"), str) or not isinstance(meta["arch"].get("params", {}), dict):
        raise RunError(f"'arch' in {meta_path} needs a 'name' string and a 'params' object")
    if meta["format_version"] > FORMAT_VERSION:
        raise RunError(f"{run_dir} was written by a newer BackSplit (format {meta['format_version']})",
                       "upgrade backsplit")
    return meta


def load_run(run_dir: Union[str, Path]) -> RunInfo:
    """Read RUN/model.json; RunError when the folder is not a BackSplit run."""
    from BackSplitLib.schema import LabelSchema  # numpy: imported when a schema is needed, not by the client

    run_dir = Path(run_dir)
    meta = read_model_json(run_dir)
    return RunInfo(run_dir, meta, LabelSchema.from_dict(meta["schema"], str(run_dir / MODEL_JSON)))


def run_metrics(meta: dict) -> dict:
    """Summary numbers of a run's model.json for the model listing (best validation Dice, last loss, ...)."""
    history = meta.get("history") or []
    last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
    metrics = {"best_val_dice": meta.get("best_val_dice")}
    lesion = meta.get("lesion")
    if isinstance(lesion, dict):  # the trainer's lesion watch (lesion_watch.LesionWatch.record)
        metrics.update(lesion_found=lesion.get("found"), lesion_started_at=lesion.get("started_at"),
                       lesion_message=lesion.get("message"))
    for key in ("iteration", "loss", "val_dice"):
        if key in last:
            metrics[f"last_{key}"] = last[key]
    return metrics


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename: readers never see half a file."""
    with atomic_file(path) as tmp:
        write(str(tmp))


def write_model_json(run_dir: Path, meta: dict) -> None:
    meta = {"format_version": FORMAT_VERSION, **meta}
    write_json_atomic(run_dir / MODEL_JSON, meta)


def append_log(run_dir: Path, record: dict) -> None:
    with open(run_dir / LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------- a run as a zip
TEXT_SUFFIXES = (".json", ".jsonl", ".log", ".txt", ".csv")


def pack_run(run_dir: Union[str, Path], archive: Union[str, Path],
             rewrite_text: Optional[Callable[[str], str]] = None) -> Path:
    """The run folder as a zip with relative names (hidden files left out), written through a temporary name.
    ``rewrite_text`` is applied to the text files (model.json, logs): the server removes its own paths."""
    run_dir, archive = Path(run_dir), Path(archive)

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for file in sorted(run_dir.rglob("*")):
                if file.is_file() and not file.name.startswith("."):
                    name = file.relative_to(run_dir).as_posix()
                    if rewrite_text is not None and file.suffix.lower() in TEXT_SUFFIXES:
                        zf.writestr(name, rewrite_text(file.read_text(encoding="utf-8", errors="replace")))
                    else:
                        zf.write(file, name)

    atomic_write(archive, write)  # creates the parent folder
    return archive


def _member_path(name: str, archive_name: str) -> PurePosixPath:
    """A zip member's relative path, or RunError for names that could escape, collide or hide ('.', '..')."""
    raw = name.replace("\\", "/")
    parts = raw[:-1].split("/") if raw.endswith("/") else raw.split("/")
    if (raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or any(p in ("", ".", "..") for p in parts)
            or any(ord(c) < 32 for c in raw)):
        raise RunError(f"'{archive_name}' holds an unsafe member name {name[:80]!r}")
    return PurePosixPath(*parts)


def _safe_members(zf: zipfile.ZipFile, archive_name: str, max_bytes: Optional[int]) -> Dict[PurePosixPath, zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise RunError(f"'{archive_name}' holds {len(infos)} members; a run folder holds a few files")
    files: Dict[PurePosixPath, zipfile.ZipInfo] = {}
    folders = set()
    for info in infos:
        path = _member_path(info.filename, archive_name)
        if info.is_dir():
            folders.add(path)
            continue
        if path in files:
            raise RunError(f"'{archive_name}' holds '{path}' twice")
        files[path] = info
        folders.update(path.parents)
    clash = next((p for p in files if p in folders), None)
    if clash is not None:
        raise RunError(f"'{archive_name}' holds '{clash}' both as a file and as a folder")
    if max_bytes is not None and sum(i.file_size for i in files.values()) > max_bytes:
        raise ArchiveTooLarge(f"'{archive_name}' unpacks to more than {max_bytes} bytes")
    return files


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, archive_name: str,
             budget: Optional[int]) -> int:
    """Copy one member to ``target``, counting the bytes actually produced (headers can lie)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with zf.open(info) as src, open(target, "wb") as out:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                written += len(chunk)
                if budget is not None and written > budget:
                    raise ArchiveTooLarge(f"'{archive_name}' unpacks to more than its declared size")
                out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError, ValueError,
            RuntimeError) as e:
        # CRC mismatches, unsupported compression, encrypted members, truncated data
        raise RunError(f"'{archive_name}' could not be unpacked ({type(e).__name__}: {str(e)[:120]})") from None
    return written


def _open_zip(archive: Path, archive_name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise RunError(f"'{archive_name}' is not a readable zip file ({type(e).__name__})") from None


def unpack_run(archive: Union[str, Path], dest: Union[str, Path], max_bytes: Optional[int] = None,
               archive_name: Optional[str] = None) -> Path:
    """Extract a run-folder zip safely into ``dest``: no member outside it, no name collisions, at most
    ``max_bytes`` written; returns the folder holding model.json (the shallowest). RunError otherwise."""
    archive, dest = Path(archive), Path(dest)
    name = archive_name or archive.name
    with _open_zip(archive, name) as zf:
        files = _safe_members(zf, name, max_bytes)
        budget = max_bytes
        for path, info in files.items():
            written = _extract(zf, info, dest.joinpath(*path.parts), name,
                               min(info.file_size, budget) if budget is not None else info.file_size)
            if budget is not None:
                budget -= written
    found = sorted((p for p in files if p.name == MODEL_JSON), key=lambda p: len(p.parts))
    if not found:
        raise RunError(f"'{name}' holds no {MODEL_JSON}", "zip a run folder written by 'backsplit train'")
    return dest.joinpath(*found[0].parent.parts)


# ---------------------------------------------------------------------- the prediction bundle
def prediction_names(base: str, ext: str) -> tuple:
    """File names of a prediction of the image ``base`` + ``ext``: (lesion mask, class map)."""
    return f"{base}{MASK_SUFFIX}{ext}", f"{base}{CLASSES_SUFFIX}{ext}"


@dataclass
class PredictionBundle:
    """An unpacked bundle: the mask and class-map files and the model's schema (engine JSON form)."""

    mask: Path
    classes: Path
    schema: dict


def write_prediction_bundle(archive: Path, mask: Path, classes: Path, schema: dict) -> Path:
    """The bundle zip: both images under their own names, ``schema.json`` and the manifest."""
    manifest = {"mask": mask.name, "classes": classes.name, "schema": BUNDLE_SCHEMA}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(mask, mask.name)
        zf.write(classes, classes.name)
        zf.writestr(BUNDLE_SCHEMA, json.dumps(schema, indent=2) + "\n")
        zf.writestr(BUNDLE_MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return archive


def _legacy_manifest(names: list) -> dict:
    """Bundles from servers before the manifest: members named <base>_lesion<ext> / <base>_classes<ext>."""
    found: dict = {"schema": BUNDLE_SCHEMA}
    for name in names:
        match = re.search(r"(_lesion|_classes)((?:\.[A-Za-z0-9]+)+)$", name)
        if match:
            found.setdefault("mask" if match.group(1) == MASK_SUFFIX else "classes", name)
    return found


def read_prediction_bundle(archive: Union[str, Path], folder: Union[str, Path]) -> PredictionBundle:
    """Unpack a bundle into ``folder`` and say which file is which; RunError when it is incomplete."""
    archive, folder = Path(archive), Path(folder)
    with _open_zip(archive, archive.name) as zf:
        files = {str(p): info for p, info in _safe_members(zf, archive.name, None).items()}
        if BUNDLE_MANIFEST in files:
            try:
                manifest = json.loads(zf.read(files[BUNDLE_MANIFEST]))
            except (ValueError, zipfile.BadZipFile) as e:
                raise RunError(f"the prediction bundle's {BUNDLE_MANIFEST} is damaged ({type(e).__name__})") from None
        else:
            manifest = _legacy_manifest(sorted(files))
        roles = {role: manifest.get(role) for role in ("mask", "classes", "schema")}
        if not all(isinstance(n, str) and n in files for n in roles.values()):
            raise RunError(f"the prediction bundle is incomplete (has {', '.join(sorted(files))})")
        for member in roles.values():
            _extract(zf, files[member], folder / member, archive.name, files[member].file_size)
    try:
        schema = json.loads((folder / roles["schema"]).read_text())
    except ValueError as e:
        raise RunError(f"the prediction bundle's {roles['schema']} is damaged ({type(e).__name__})") from None
    return PredictionBundle(folder / roles["mask"], folder / roles["classes"], schema)

