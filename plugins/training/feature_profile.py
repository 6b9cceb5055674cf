"""profile.json: the training rows' feature distributions, which the runtime's drift
check compares the features it feeds the model with (runtime/src/quality/drift.rs reads
and checks this format).

    {"format": "forecourt-profile", "format_version": 1,
     "input": "features",   the ONNX input whose columns are profiled
     "row": 0,              the row of each request profiled (car-price's forecast rows follow row 0)
     "rows": 643,           training rows profiled
     "features": [          one per request field, in column order
       {"name": "mileage", "kind": "numeric", "column": 0,
        "edges": [...],     bins (-inf, e0], (e0, e1], ..., (e_last, inf): training deciles, as float32
        "shares": [...],    the share of training rows in each bin
        "minimums": [...], "maximums": [...]},   the least and greatest training value in each bin (null: empty)
       {"name": "make", "kind": "categorical", "columns": [6, 7, ...],   a one-hot group
        "values": ["buick", ...], "shares": [...]}]}

Floats are written with Python's repr (shortest round trip); the file is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

FORMAT = "forecourt-profile"
FORMAT_VERSION = 1
BINS = 10


def _f32(value) -> float:
    return float(np.float32(value))


def numeric(name: str, column: int, x: np.ndarray) -> dict:
    """Decile bins of one column (duplicate edges merged, so a column of few values gets a
    bin per value)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    quantiles = np.quantile(x, [i / BINS for i in range(1, BINS)], method="linear")
    edges = sorted({_f32(q) for q in quantiles})
    # side="left": bin i holds edges[i-1] < x <= edges[i], as the runtime counts.
    bins = np.searchsorted(np.asarray(edges), x, side="left")
    shares, minimums, maximums = [], [], []
    for b in range(len(edges) + 1):
        inside = x[bins == b]
        shares.append(float(inside.size / x.size))
        minimums.append(float(inside.min()) if inside.size else None)
        maximums.append(float(inside.max()) if inside.size else None)
    return {"name": name, "kind": "numeric", "column": column, "edges": edges, "shares": shares,
            "minimums": minimums, "maximums": maximums}


def categorical(name: str, columns: Sequence[int], values: Sequence[str], X: np.ndarray) -> dict:
    """A one-hot group: each row's value is the column that is 1."""
    block = np.asarray(X[:, list(columns)])
    if not np.all(block.sum(axis=1) == 1.0):
        raise SystemExit(f"profile: {name}'s one-hot columns are not exclusive")
    counts = block.sum(axis=0)
    return {"name": name, "kind": "categorical", "columns": list(columns), "values": list(values),
            "shares": [float(c / block.shape[0]) for c in counts]}


def profile(features: Sequence[str], groups: Sequence[str], X_train: np.ndarray, input_name: str = "features",
            row: int = 0) -> dict:
    """The profile of the training rows: `<group>_<value>` columns form the categorical
    field <group>; every other column is a numeric field of its own name."""
    out, seen = [], set()
    for column, name in enumerate(features):
        group = next((g for g in groups if name.startswith(g + "_")), None)
        if group is None:
            out.append(numeric(name, column, X_train[:, column]))
        elif group not in seen:
            seen.add(group)
            members = [(c, n[len(group) + 1:]) for c, n in enumerate(features) if n.startswith(group + "_")]
            out.append(categorical(group, [c for c, _ in members], [v for _, v in members], X_train))
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "input": input_name, "row": row,
            "rows": int(X_train.shape[0]), "features": out}


def write(path: Path, doc: dict) -> dict:
    """Writes profile.json; returns the metrics.json "profile" section."""
    Path(path).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n",
                          encoding="ascii")
    return {"file": Path(path).name, "rows": doc["rows"], "features": [f["name"] for f in doc["features"]]}
