"""The store's rows as the API's dicts and back: JSON columns decoded (encoded on the way in), flags as
booleans, a model's ``current`` from its project's current model. ``Store`` calls these; project rows have
their own in ``store_projects.py``."""

from __future__ import annotations

import json


def encode_row(row: dict, json_keys: tuple[str, ...]) -> dict:
    return {k: json.dumps(v) if k in json_keys else v for k, v in row.items()}


def case_dict(row) -> dict:
    d = dict(row)
    for key in ("schema", "size", "spacing", "classes"):
        d[key] = json.loads(d[key])
    return d


def job_dict(row) -> dict:
    d = dict(row)
    params = json.loads(d.pop("params"))
    d["cases"] = json.loads(d["cases"])
    d["params"] = params
    d["cancel_requested"] = bool(d["cancel_requested"])
    d["resume"] = bool(d["resume"])
    return d


def model_dict(row, current: str | None) -> dict:
    d = dict(row)
    for key in ("schema", "metrics", "cases"):
        d[key] = json.loads(d[key])
    d["current"] = d["id"] == current
    return d
