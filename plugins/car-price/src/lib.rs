//! car-price: a kiosk's description of a used car to the car-price model's inputs, and
//! the model's rows back to a valuation, with future valuations when asked.
//!
//! The model (plugins/car-price/model/) is gradient-boosted trees trained on Kelley Blue
//! Book prices of used GM cars, composed with an age-depreciation factor fitted on used
//! listings. It takes `features` [N, 17] (column order below) and `years_ahead` [N, 1],
//! and returns `price` [N, 1] in USD. Row 0 is the car today; each `forecast_months`
//! horizon adds a row with the mileage projected by `annual_mileage`.

use forecourt_plugin_sdk::prelude::*;
use serde_json::json;

const MAKE: Category =
    Category::new("make", "Manufacturer", &["buick", "cadillac", "chevrolet", "pontiac", "saab", "saturn"]);
const BODY: Category = Category::new("body", "Body type", &["convertible", "coupe", "hatchback", "sedan", "wagon"]);
const MILEAGE: Number = Number::new("mileage", "Odometer reading").unit("mi").range(0.0, 1_000_000.0);
const CYLINDERS: Integer = Integer::new("cylinders", "Engine cylinders").range(2, 16);
const DOORS: Integer = Integer::new("doors", "Number of doors").range(2, 5);
const CRUISE: Flag = Flag::new("cruise", "Cruise control fitted").default(false);
const SOUND: Flag = Flag::new("sound", "Upgraded sound system fitted").default(false);
const LEATHER: Flag = Flag::new("leather", "Leather seats").default(false);
const FORECAST_MONTHS: IntegerList =
    IntegerList::new("forecast_months", "Also value the car this many months from now", 12)
        .unit("months")
        .range(1, 120);
const ANNUAL_MILEAGE: Number =
    Number::new("annual_mileage", "Miles the car is expected to be driven per year, for forecasts")
        .unit("mi/year")
        .range(0.0, 200_000.0)
        .default(12_000.0);

/// The model's feature columns: mileage, cylinders, doors, cruise, sound, leather, then
/// the make and body one-hots in vocabulary order.
const WIDTH: usize = 6 + MAKE.values.len() + BODY.values.len();
const MILEAGE_COLUMN: usize = 0;

pub struct CarPrice;

impl Plugin for CarPrice {
    const INFO: Info = Info::new(
        "car-price",
        env!("CARGO_PKG_VERSION"),
        "Used-car valuation from make, body, mileage, engine and options, with future valuations",
    );
    const FIELDS: &'static [&'static dyn Field] =
        &[&MAKE, &BODY, &MILEAGE, &CYLINDERS, &DOORS, &CRUISE, &SOUND, &LEATHER, &FORECAST_MONTHS, &ANNUAL_MILEAGE];
    const OUTPUTS: &'static [Output] = &[
        Output::new("price", "Estimated value today").unit("USD"),
        Output::new("forecast", "Estimated value at each asked horizon").unit("USD"),
    ];

    fn preprocess(request: &Request) -> Result<Vec<Tensor>, InputError> {
        let mileage = request.get(&MILEAGE)?;
        let mut features = Features::new(WIDTH);
        features
            .number(mileage)
            .number(request.get(&CYLINDERS)? as f64)
            .number(request.get(&DOORS)? as f64)
            .flag(request.get(&CRUISE)?)
            .flag(request.get(&SOUND)?)
            .flag(request.get(&LEATHER)?)
            .one_hot(&MAKE, request.get(&MAKE)?)
            .one_hot(&BODY, request.get(&BODY)?);

        let annual_mileage = request.get(&ANNUAL_MILEAGE)?;
        let mut years_ahead = vec![0.0];
        for months in request.get(&FORECAST_MONTHS)? {
            let projected = mileage + annual_mileage * months as f64 / 12.0;
            features.repeat_row()[MILEAGE_COLUMN] = projected as f32;
            years_ahead.push((months as f64 / 12.0) as f32);
        }
        let rows = years_ahead.len() as u32;
        Ok(vec![features.into_tensor("features"), Tensor::float32("years_ahead", &[rows, 1], years_ahead)])
    }

    fn postprocess(request: &Request, outputs: &Outputs) -> Result<Option<String>, OutputError> {
        let prices = outputs.float32("price")?;
        let months = request.get(&FORECAST_MONTHS).map_err(|error| OutputError { message: error.message })?;
        let [today, ahead @ ..] = prices else {
            return Err(OutputError { message: "the model returned no price".to_owned() });
        };
        if ahead.len() != months.len() {
            return Err(OutputError {
                message: format!("expected {} forecast prices, got {}", months.len(), ahead.len()),
            });
        }
        let mut response = json!({ "price": cents(*today), "currency": "USD" });
        if !months.is_empty() {
            let forecast: Vec<_> = months
                .iter()
                .zip(ahead)
                .map(|(months, price)| json!({ "months": months, "price": cents(*price) }))
                .collect();
            response["forecast"] = json!(forecast);
        }
        Ok(Some(response.to_string()))
    }
}

fn cents(price: f32) -> f64 {
    (price as f64 * 100.0).round() / 100.0
}

export_plugin!(CarPrice);

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocess(json: &str) -> Result<Vec<Tensor>, InputError> {
        CarPrice::preprocess(&Request::parse(json, CarPrice::FIELDS)?)
    }

    #[test]
    fn a_car_becomes_one_row_of_seventeen_features() {
        let tensors = preprocess(
            r#"{"make": "saab", "body": "wagon", "mileage": 20105, "cylinders": 4, "doors": 4,
                "cruise": true, "sound": false, "leather": true}"#,
        )
        .unwrap();
        let expected = vec![20105.0, 4.0, 4.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        assert_eq!(tensors[0], Tensor::float32("features", &[1, 17], expected));
        assert_eq!(tensors[1], Tensor::float32("years_ahead", &[1, 1], vec![0.0]));
    }

    #[test]
    fn each_forecast_horizon_adds_a_row_with_projected_mileage() {
        let tensors = preprocess(
            r#"{"make": "buick", "body": "sedan", "mileage": 10000, "cylinders": 6, "doors": 4,
                "forecast_months": [6, 24], "annual_mileage": 10000}"#,
        )
        .unwrap();
        assert_eq!(tensors[0].shape, vec![3, 17]);
        let TensorData::Float32(features) = &tensors[0].data else { panic!("features are float32") };
        let mileage: Vec<f32> = features.chunks(17).map(|row| row[0]).collect();
        assert_eq!(mileage, vec![10000.0, 15000.0, 30000.0]);
        assert_eq!(tensors[1], Tensor::float32("years_ahead", &[3, 1], vec![0.0, 0.5, 2.0]));
    }

    #[test]
    fn postprocess_rounds_to_cents_and_lists_forecasts() {
        let request = Request::parse(
            r#"{"make": "buick", "body": "sedan", "mileage": 1, "cylinders": 6, "doors": 4, "forecast_months": [12]}"#,
            CarPrice::FIELDS,
        )
        .unwrap();
        let outputs = Outputs::new(vec![Tensor::float32("price", &[2, 1], vec![20000.126, 18000.5])]);
        let response: serde_json::Value =
            serde_json::from_str(&CarPrice::postprocess(&request, &outputs).unwrap().unwrap()).unwrap();
        assert_eq!(
            response,
            json!({"price": 20000.13, "currency": "USD", "forecast": [{"months": 12, "price": 18000.5}]})
        );
    }
}
