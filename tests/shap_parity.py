#!/usr/bin/env python3
"""SHAP parity: the appliance's explanations against shap.TreeExplainer on the real models.

    python3 tests/shap_parity.py HOST:PORT car-price|housing [--rows N]

Rebuilds the bundle's trained estimator exactly as plugins/<name>/model/train.py does (same
data, split and hyperparameters, read from metrics.json; one thread, fixed seeds), proves it
is the same model by reproducing golden.jsonl's expected values, then for each golden row
compares shap.TreeExplainer's path-dependent SHAP values (per model column) and expected
value with the `explanation` of `POST /v1/predict/<name>?explain=true`.

Tolerance rule: for every row and every model column,
    |phi_appliance - phi_shap| <= 1e-4 * |prediction of the row|,
and the same for the baseline (expected value). Prints one JSON report on stdout; exits 1
when a value is outside the tolerance.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def load_train(name: str):
    path = REPO / "plugins" / name / "model" / "train.py"
    spec = importlib.util.spec_from_file_location(f"train_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports `common` first, which pins threads
    return module


def car_price_model(train):
    import numpy as np
    import xgboost as xgb

    common = train.common
    df, _ = common.load_rdataset("modeldata", "car_prices")
    X = df[train.SOURCE_COLUMNS].to_numpy(dtype=np.float32)
    y = df[train.TARGET].to_numpy(dtype=np.float64)
    X_train, _, y_train, _ = common.split(X, y)
    params = json.loads((REPO / "plugins/car-price/model/metrics.json").read_text())["model"]["hyperparameters"]
    model = xgb.XGBRegressor(**params).fit(X_train, y_train)

    def features(request):
        return train.request_to_inputs(request)["features"][:1]

    return model, features, train.FEATURES


def housing_model(train):
    import numpy as np
    from sklearn.ensemble import GradientBoostingRegressor

    common = train.common
    raw, _ = common.load_rdataset("modeldata", "ames")
    neighborhoods = sorted(raw["Neighborhood"].str.lower().unique().tolist())
    df = raw.loc[~(raw["Gr_Liv_Area"] > train.MAX_LIVING_AREA)].reset_index(drop=True)
    X = train.frame_to_features(df, neighborhoods)
    y = df[train.TARGET].to_numpy(dtype=np.float64)
    X_train, _, y_train, _ = common.split(X, y)
    params = json.loads((REPO / "plugins/housing/model/metrics.json").read_text())["model"]["hyperparameters"]
    model = GradientBoostingRegressor(**params).fit(X_train, y_train)
    to_inputs = train.make_request_to_inputs(neighborhoods)

    def features(request):
        return to_inputs(request)["features"]

    return model, features, train.feature_names(neighborhoods)


def post(host_port: str, name: str, request: dict, token: str | None) -> dict:
    body = json.dumps(request).encode()
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://{host_port}/v1/predict/{name}?explain=true", body, headers)
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host_port")
    parser.add_argument("bundle", choices=["car-price", "housing"])
    parser.add_argument("--rows", type=int, default=0, help="golden rows to check (0: all)")
    parser.add_argument("--token")
    args = parser.parse_args()

    import numpy as np
    import shap

    train = load_train(args.bundle)
    model, features, columns = (car_price_model if args.bundle == "car-price" else housing_model)(train)
    golden = train.common.read_golden(REPO / "plugins" / args.bundle / "model" / "golden.jsonl")
    if args.rows:
        golden = golden[: args.rows]
    X = np.concatenate([features(record["request"]) for record in golden]).astype(np.float32)

    # The rebuilt estimator is the trained one: it gives golden.jsonl's values (row 0: today).
    predicted = model.predict(X).astype(np.float64)
    expected = np.array([record["expected"]["price"][0] for record in golden])
    same_model = float(np.max(np.abs(predicted - expected) / np.abs(expected)))
    if same_model > 1e-6:
        print(json.dumps({"error": f"the rebuilt model differs from golden.jsonl by {same_model:.3g}"}))
        return 1

    explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    phi_shap = np.asarray(explainer.shap_values(X), dtype=np.float64)
    base_shap = float(np.ravel(explainer.expected_value)[0])

    worst = {"phi_abs": 0.0, "phi_rel": 0.0, "baseline_abs": 0.0, "sum_vs_price_abs": 0.0}
    failures = []
    for r, record in enumerate(golden):
        answer = post(args.host_port, args.bundle, record["request"], args.token)
        explanation = answer["explanation"]
        phi_rust = {}
        for contribution in explanation["contributions"]:
            phi_rust.update(contribution["columns"])
        scale = abs(predicted[r])
        for j, column in enumerate(columns):
            diff = abs(phi_rust[column] - phi_shap[r, j])
            worst["phi_abs"] = max(worst["phi_abs"], diff)
            worst["phi_rel"] = max(worst["phi_rel"], diff / scale)
            if diff > TOLERANCE * scale:
                failures.append(f"row {r} column {column}: appliance {phi_rust[column]!r} shap {phi_shap[r, j]!r}")
        diff = abs(explanation["baseline"] - base_shap)
        worst["baseline_abs"] = max(worst["baseline_abs"], diff)
        if diff > TOLERANCE * scale:
            failures.append(f"row {r}: baseline {explanation['baseline']!r} vs shap {base_shap!r}")
        total = explanation["baseline"] + sum(c["contribution"] for c in explanation["contributions"])
        today = answer["outputs"]["price"]
        worst["sum_vs_price_abs"] = max(worst["sum_vs_price_abs"], abs(total - today))

    report = {
        "bundle": args.bundle,
        "rows": len(golden),
        "columns": len(columns),
        "shap": shap.__version__,
        "tolerance_rule": f"|phi_appliance - phi_shap| <= {TOLERANCE} * |prediction| per row and column",
        "rebuilt_model_vs_golden_max_relative": same_model,
        "max_abs_phi_difference": worst["phi_abs"],
        "max_phi_difference_relative_to_prediction": worst["phi_rel"],
        "max_abs_baseline_difference": worst["baseline_abs"],
        "max_abs_baseline_plus_contributions_vs_returned_price": worst["sum_vs_price_abs"],
        "failures": failures[:20],
    }
    print(json.dumps(report))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
