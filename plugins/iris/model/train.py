#!/usr/bin/env python3
"""Train Forecourt's iris model: species from four flower measurements.

    python3 plugins/iris/model/train.py      (from any directory)

Writes model.onnx, metrics.json and golden.jsonl next to this file,
byte-for-byte identical on every run with the pinned requirements
(plugins/training/requirements.txt).

Data: scikit-learn's bundled load_iris (Fisher 1936 / Anderson 1935, 150
flowers). Model: multinomial LogisticRegression, converted with skl2onnx
(zipmap off, so probabilities are a plain float tensor).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the repo
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "training"))
import common  # noqa: E402  (first: pins threads before numpy is imported)

import feature_profile  # noqa: E402
import numpy as np  # noqa: E402

NAME = "iris"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES = ["setosa", "versicolor", "virginica"]
INPUTS = [("features", "float32", ("N", len(FEATURES)))]
OUTPUTS = [("label", "int64", ("N",)), ("probabilities", "float32", ("N", len(CLASSES)))]
LR_PARAMS = dict(C=1.0, max_iter=1000, solver="lbfgs", tol=1e-4, random_state=common.SEED)


def request_to_inputs(req: dict) -> dict[str, np.ndarray]:
    """Request JSON -> ONNX inputs (Python reference of the Rust plugin)."""
    return {"features": np.asarray([[float(req[f]) for f in FEATURES]], dtype=np.float32)}


def row_to_request(x: np.ndarray) -> dict:
    # the bundled values have one decimal: round away float noise for the kiosk's JSON
    return {f: round(float(v), 1) for f, v in zip(FEATURES, x.tolist())}


def main() -> None:
    clock = common.Stopwatch()
    common.check_requirements()
    common.seed_everything()
    import sklearn
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    paths = common.model_paths(__file__)
    iris = load_iris()
    if list(iris.target_names) != CLASSES:
        raise SystemExit(f"unexpected iris classes {list(iris.target_names)}")
    # Train on the float32 values the ONNX model (and the Rust plugin) will see.
    X = iris.data.astype(np.float32)
    y = iris.target.astype(np.int64)
    X_train, X_test, y_train, y_test = common.split(X, y)

    model = LogisticRegression(**LR_PARAMS).fit(X_train, y_train)
    pred_test = model.predict(X_test)

    onx = convert_sklearn(
        model, name="iris_logreg",
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        target_opset={"": common.MAX_ONNX_OPSET, "ai.onnx.ml": common.MAX_ML_OPSET},
        options={id(model): {"zipmap": False}},
    )
    onx.graph.name = "iris"
    onx = common.finalize_onnx(
        onx, INPUTS, OUTPUTS,
        metadata={
            "forecourt.model": NAME,
            "forecourt.features": ",".join(FEATURES),
            "forecourt.classes": ",".join(CLASSES),
            "forecourt.converter": "skl2onnx " + common.library_versions()["skl2onnx"],
        },
        doc="Iris species (0 setosa, 1 versicolor, 2 virginica) from sepal/petal length and width "
            "in cm: scikit-learn LogisticRegression on load_iris.",
    )
    common.save_onnx(onx, paths["onnx"])

    records = []
    for x in X_test:
        req = row_to_request(x)
        xr = request_to_inputs(req)["features"]
        if not np.array_equal(xr[0], x):
            raise SystemExit(f"request {req} does not reproduce the feature row {x.tolist()}")
        records.append({"request": req, "expected": {
            "label": model.predict(xr).astype(np.int64).tolist(),
            "probabilities": model.predict_proba(xr).astype(np.float64).tolist(),
        }})
    common.write_golden(paths["golden"], records)
    golden_stats = common.check_golden(paths["golden"], paths["onnx"], request_to_inputs)

    metrics = {
        "model": {
            "name": NAME,
            "task": "3-class classification with probabilities",
            "estimator": "sklearn.linear_model.LogisticRegression (multinomial, lbfgs)",
            "hyperparameters": LR_PARAMS,
            "tuning": "none (defaults; 120 training rows)",
        },
        "onnx": common.onnx_section(
            onx, paths["onnx"], INPUTS, OUTPUTS,
            inputs_extra={"features": {"features": FEATURES, "unit": "cm"}},
            outputs_extra={
                "label": {"classes": CLASSES, "value": "class index, argmax of probabilities"},
                "probabilities": {"classes": CLASSES, "value": "softmax probabilities, columns in class-index order"},
            },
        ),
        "request": {
            "fields": {f: "number, cm" for f in FEATURES},
            "rows": "one model row per request",
            "response": "label: [class index]; probabilities: [[p_setosa, p_versicolor, p_virginica]]",
        },
        "metrics": {
            "test": common.classification_metrics(y_test, pred_test, CLASSES),
            "train": common.classification_metrics(y_train, model.predict(X_train), CLASSES),
            "note": "30 held-out rows: one error moves accuracy by 0.033; treat as a smoke test, not a benchmark",
        },
        "data": {
            "source": "scikit-learn bundled data set (no download)",
            "package": "scikit-learn",
            "package_version": sklearn.__version__,
            "dataset": "iris",
            "loader": "sklearn.datasets.load_iris()",
            "file": "sklearn/datasets/data/iris.csv",
            "file_sha256": common.sha256_file(Path(sklearn.__file__).parent / "datasets" / "data" / "iris.csv"),
            "citation": "Fisher, R. A. (1936). The use of multiple measurements in taxonomic problems. "
                        "Annals of Eugenics 7(2), 179-188; measurements by Anderson, E. (1935).",
            "rows": int(X.shape[0]),
            "columns": int(X.shape[1]) + 1,
            "dropped_rows": [],
            "dropped_columns": {},
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(CLASSES)},
            "test_class_counts": {c: int((y_test == i).sum()) for i, c in enumerate(CLASSES)},
        },
        **common.common_sections(len(y_train), len(y_test), golden_stats),
    }
    common.write_json(paths["metrics"], metrics)
    profile = feature_profile.write(paths["onnx"].with_name("profile.json"),
                                    feature_profile.profile(FEATURES, [], X_train))
    print(f"[{NAME}] profile.json: {profile}")
    common.report(NAME, paths, clock.lap(), {"test": {k: metrics["metrics"]["test"][k] for k in ("accuracy", "f1_macro")}})


if __name__ == "__main__":
    main()
