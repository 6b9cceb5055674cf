//! housing: a house's attributes to the Ames housing model's features. The response uses
//! the host's default shape (`price` in USD).
//!
//! The model (plugins/housing/model/) takes `features` [N, 40]: twelve numeric columns
//! in the order of [`NUMERIC`]-then-flags below, then a one-hot of the neighbourhood.

use forecourt_plugin_sdk::prelude::*;

const LIVING_AREA: Number =
    Number::new("living_area_sqft", "Above-ground living area").unit("sq ft").range(100.0, 20_000.0);
const LOT_AREA: Number = Number::new("lot_area_sqft", "Lot size").unit("sq ft").range(0.0, 2_000_000.0);
const YEAR_BUILT: Integer = Integer::new("year_built", "Original construction year").range(1800, 2100);
const YEAR_REMODELED: Integer =
    Integer::new("year_remodeled", "Year of the last remodel or addition; the construction year if never remodeled")
        .range(1800, 2100);
const BASEMENT: Number =
    Number::new("total_basement_sqft", "Total basement area").unit("sq ft").range(0.0, 20_000.0).default(0.0);
const GARAGE_CARS: Integer = Integer::new("garage_cars", "Garage capacity in cars").range(0, 10).default(0);
const FULL_BATHS: Integer = Integer::new("full_baths", "Full bathrooms above grade").range(0, 10);
const HALF_BATHS: Integer = Integer::new("half_baths", "Half bathrooms above grade").range(0, 10).default(0);
const BEDROOMS: Integer = Integer::new("bedrooms", "Bedrooms above grade").range(0, 20);
const FIREPLACES: Integer = Integer::new("fireplaces", "Fireplaces").range(0, 10).default(0);
const CENTRAL_AIR: Flag = Flag::new("central_air", "Central air conditioning").default(true);
const CONDITION: Category = Category::new(
    "overall_condition",
    "Overall condition of the house, from very_poor to very_excellent",
    &[
        "very_poor",
        "poor",
        "fair",
        "below_average",
        "average",
        "above_average",
        "good",
        "very_good",
        "excellent",
        "very_excellent",
    ],
)
.default("average");
const NEIGHBORHOOD: Category = Category::new(
    "neighborhood",
    "Neighbourhood within Ames, Iowa",
    &[
        "bloomington_heights",
        "blueste",
        "briardale",
        "brookside",
        "clear_creek",
        "college_creek",
        "crawford",
        "edwards",
        "gilbert",
        "green_hills",
        "greens",
        "iowa_dot_and_rail_road",
        "landmark",
        "meadow_village",
        "mitchell",
        "north_ames",
        "northpark_villa",
        "northridge",
        "northridge_heights",
        "northwest_ames",
        "old_town",
        "sawyer",
        "sawyer_west",
        "somerset",
        "south_and_west_of_iowa_state_university",
        "stone_brook",
        "timberland",
        "veenker",
    ],
);

/// Numeric columns, in the model's order; the flag, the ordinal and the one-hot follow.
const NUMERIC: [&dyn NumericField; 10] = [
    &LIVING_AREA,
    &LOT_AREA,
    &YEAR_BUILT,
    &YEAR_REMODELED,
    &BASEMENT,
    &GARAGE_CARS,
    &FULL_BATHS,
    &HALF_BATHS,
    &BEDROOMS,
    &FIREPLACES,
];
const WIDTH: usize = NUMERIC.len() + 2 + NEIGHBORHOOD.values.len();

/// A field read as one numeric feature column.
trait NumericField: Sync {
    fn column(&self, request: &Request) -> Result<f64, InputError>;
}

impl NumericField for Number {
    fn column(&self, request: &Request) -> Result<f64, InputError> {
        request.get(self)
    }
}

impl NumericField for Integer {
    fn column(&self, request: &Request) -> Result<f64, InputError> {
        Ok(request.get(self)? as f64)
    }
}

struct Housing;

impl Plugin for Housing {
    const INFO: Info =
        Info::new("housing", env!("CARGO_PKG_VERSION"), "House sale price from its size, age, rooms and neighbourhood");
    const FIELDS: &'static [&'static dyn Field] = &[
        &LIVING_AREA,
        &LOT_AREA,
        &YEAR_BUILT,
        &YEAR_REMODELED,
        &BASEMENT,
        &GARAGE_CARS,
        &FULL_BATHS,
        &HALF_BATHS,
        &BEDROOMS,
        &FIREPLACES,
        &CENTRAL_AIR,
        &CONDITION,
        &NEIGHBORHOOD,
    ];
    const OUTPUTS: &'static [Output] = &[Output::new("price", "Estimated sale price").unit("USD")];

    fn preprocess(request: &Request) -> Result<Vec<Tensor>, InputError> {
        if request.get(&YEAR_REMODELED)? < request.get(&YEAR_BUILT)? {
            return Err(InputError {
                code: ErrorCode::InvalidValue,
                field: Some(YEAR_REMODELED.name.to_owned()),
                message: "`year_remodeled` must not be before `year_built`".to_owned(),
            });
        }
        let mut features = Features::new(WIDTH);
        for field in NUMERIC {
            features.number(field.column(request)?);
        }
        features
            .flag(request.get(&CENTRAL_AIR)?)
            .ordinal(request.get(&CONDITION)?, 1.0)
            .one_hot(&NEIGHBORHOOD, request.get(&NEIGHBORHOOD)?);
        Ok(vec![features.into_tensor("features")])
    }
}

export_plugin!(Housing);

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocess(json: &str) -> Result<Vec<Tensor>, InputError> {
        Housing::preprocess(&Request::parse(json, Housing::FIELDS)?)
    }

    #[test]
    fn a_house_becomes_forty_features_with_defaults_filled_in() {
        let tensors = preprocess(
            r#"{"living_area_sqft": 1656, "lot_area_sqft": 31770, "year_built": 1960, "year_remodeled": 1960,
                "full_baths": 1, "bedrooms": 3, "overall_condition": "above_average", "neighborhood": "north_ames"}"#,
        )
        .unwrap();
        let mut expected = vec![1656.0, 31770.0, 1960.0, 1960.0, 0.0, 0.0, 1.0, 0.0, 3.0, 0.0, 1.0, 6.0];
        expected.extend((0..28).map(|i| if i == 15 { 1.0 } else { 0.0 }));
        assert_eq!(tensors, vec![Tensor::float32("features", &[1, 40], expected)]);
    }

    #[test]
    fn a_remodel_before_construction_is_refused() {
        let error = preprocess(
            r#"{"living_area_sqft": 1656, "lot_area_sqft": 31770, "year_built": 1960, "year_remodeled": 1950,
                "full_baths": 1, "bedrooms": 3, "neighborhood": "north_ames"}"#,
        )
        .unwrap_err();
        assert_eq!((error.code, error.field.as_deref()), (ErrorCode::InvalidValue, Some("year_remodeled")));
    }
}
