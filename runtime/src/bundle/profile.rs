//! A bundle's training profile (`profile.json`, written by `train.py` and signed with the
//! bundle) and the window of the features a version actually fed its model, counted into
//! the profile's bins as requests pass. Comparing the two (PSI, status, events) is the
//! quality module's; this module only parses, checks and counts, cheaply enough for every
//! request (a short lock, no allocation).
//!
//! The format is documented where it is written, plugins/training/feature_profile.py.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::tensor::{Tensor, TensorData};

/// The most bytes of profile.json read: a page of bins, not data.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;
/// The most features, and bins or values per feature, a profile may describe.
const MAX_FEATURES: usize = 256;
const MAX_BINS: usize = 64;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format: String,
    pub format_version: u32,
    /// The model input whose columns are profiled.
    pub input: String,
    /// The row of each request's tensor that is the request itself (car-price's forecast
    /// rows follow row 0).
    pub row: usize,
    /// Training rows profiled.
    pub rows: u64,
    pub features: Vec<Feature>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Feature {
    /// Bins `(-inf, edges[0]], (edges[0], edges[1]], …, (edges[last], inf)`.
    Numeric {
        name: String,
        column: usize,
        edges: Vec<f64>,
        shares: Vec<f64>,
        minimums: Vec<Option<f64>>,
        maximums: Vec<Option<f64>>,
    },
    /// A one-hot group: value `values[i]` when `columns[i]` is 1.
    Categorical { name: String, columns: Vec<usize>, values: Vec<String>, shares: Vec<f64> },
}

impl Feature {
    pub fn name(&self) -> &str {
        match self {
            Self::Numeric { name, .. } | Self::Categorical { name, .. } => name,
        }
    }

    /// The training share of each bin (numeric) or value (categorical).
    pub fn shares(&self) -> &[f64] {
        match self {
            Self::Numeric { shares, .. } | Self::Categorical { shares, .. } => shares,
        }
    }

    /// The bin (or value) of one row of the profiled input; `None` when the row does not
    /// fit (a NaN, or a one-hot group without exactly one 1).
    fn bin(&self, row: &[f32]) -> Option<u8> {
        let bin = match self {
            Self::Numeric { column, edges, .. } => {
                let value = f64::from(*row.get(*column)?);
                if value.is_nan() {
                    return None;
                }
                edges.partition_point(|edge| *edge < value)
            }
            Self::Categorical { columns, .. } => {
                let mut hot = columns.iter().enumerate().filter(|(_, column)| row.get(**column) == Some(&1.0));
                let (index, _) = hot.next()?;
                if hot.next().is_some() {
                    return None;
                }
                index
            }
        };
        u8::try_from(bin).ok()
    }
}

impl Profile {
    pub const FORMAT: &str = "forecourt-profile";

    /// Parses and checks profile.json against the model input it profiles, whose columns
    /// are `width` wide.
    pub fn parse(text: &str, input_width: impl Fn(&str) -> Option<usize>) -> Result<Self, String> {
        let profile: Profile = serde_json::from_str(text).map_err(|error| error.to_string())?;
        if profile.format != Self::FORMAT || profile.format_version != 1 {
            return Err(format!("format must be {:?} version 1", Self::FORMAT));
        }
        let width = input_width(&profile.input).ok_or_else(|| {
            format!("input {:?} is not a float32 input of the model with known columns", profile.input)
        })?;
        if profile.features.is_empty() || profile.features.len() > MAX_FEATURES {
            return Err(format!("features must be 1 to {MAX_FEATURES}"));
        }
        for feature in &profile.features {
            check_feature(feature, width).map_err(|reason| format!("feature {:?}: {reason}", feature.name()))?;
        }
        Ok(profile)
    }

    /// The bins of one request's row of the profiled input, one per feature; `None` when
    /// the request has no such row or it does not fit.
    fn bins(&self, tensors: &[Tensor], into: &mut Vec<u8>) -> bool {
        let Some(tensor) = tensors.iter().find(|tensor| tensor.name == self.input) else { return false };
        let TensorData::Float32(data) = &tensor.data else { return false };
        let Some(&width) = tensor.shape.get(1) else { return false };
        let Some(row) = data.get(self.row * width..(self.row + 1) * width) else { return false };
        into.clear();
        for feature in &self.features {
            match feature.bin(row) {
                Some(bin) => into.push(bin),
                None => return false,
            }
        }
        true
    }
}

fn check_feature(feature: &Feature, width: usize) -> Result<(), String> {
    let shares_ok = |shares: &[f64], count: usize| {
        shares.len() == count
            && shares.iter().all(|share| share.is_finite() && (0.0..=1.0).contains(share))
            && (shares.iter().sum::<f64>() - 1.0).abs() < 1e-6
    };
    match feature {
        Feature::Numeric { column, edges, shares, minimums, maximums, .. } => {
            if *column >= width {
                return Err(format!("column {column} is beyond the input's {width}"));
            }
            if edges.is_empty() || edges.len() >= MAX_BINS || !edges.iter().all(|edge| edge.is_finite()) {
                return Err(format!("edges must be 1 to {} finite numbers", MAX_BINS - 1));
            }
            if !edges.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err("edges must increase".into());
            }
            if !shares_ok(shares, edges.len() + 1) || minimums.len() != shares.len() || maximums.len() != shares.len() {
                return Err("shares (summing to 1), minimums and maximums need one entry per bin".into());
            }
        }
        Feature::Categorical { columns, values, shares, .. } => {
            if columns.is_empty() || columns.len() > MAX_BINS || columns.iter().any(|column| *column >= width) {
                return Err(format!("columns must be 1 to {MAX_BINS} columns of the input's {width}"));
            }
            if values.len() != columns.len() || !shares_ok(shares, columns.len()) {
                return Err("values and shares (summing to 1) need one entry per column".into());
            }
        }
    }
    Ok(())
}

/// The latest rows a version fed its model, as bins of its profile, and their counts.
#[derive(Debug)]
pub struct DriftWindow {
    profile: Profile,
    capacity: usize,
    state: Mutex<WindowState>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// Each row's bins, oldest first, `features` per row.
    rows: VecDeque<u8>,
    /// `counts[feature][bin]` over the rows held.
    counts: Vec<Vec<u64>>,
    scratch: Vec<u8>,
    /// Rows that did not fit the profile (not counted).
    unfit: u64,
}

/// The counts of a window at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowCounts {
    pub rows: usize,
    /// `counts[feature][bin]`.
    pub counts: Vec<Vec<u64>>,
    pub unfit: u64,
}

impl DriftWindow {
    pub fn new(profile: Profile, capacity: usize) -> Self {
        let counts = profile.features.iter().map(|feature| vec![0; feature.shares().len()]).collect();
        Self { profile, capacity: capacity.max(1), state: Mutex::new(WindowState { counts, ..Default::default() }) }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Counts one request's model inputs.
    pub fn observe(&self, tensors: &[Tensor]) {
        let features = self.profile.features.len();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let WindowState { rows, counts, scratch, unfit } = &mut *state;
        if !self.profile.bins(tensors, scratch) {
            *unfit += 1;
            return;
        }
        if rows.len() == self.capacity * features {
            for (feature, bin) in rows.drain(..features).enumerate() {
                counts[feature][usize::from(bin)] -= 1;
            }
        }
        for (feature, &bin) in scratch.iter().enumerate() {
            counts[feature][usize::from(bin)] += 1;
        }
        rows.extend(scratch.iter().copied());
    }

    pub fn counts(&self) -> WindowCounts {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let features = self.profile.features.len().max(1);
        WindowCounts { rows: state.rows.len() / features, counts: state.counts.clone(), unfit: state.unfit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile::parse(
            r#"{"format": "forecourt-profile", "format_version": 1, "input": "features", "row": 0, "rows": 4,
                "features": [
                  {"kind": "numeric", "name": "mileage", "column": 0, "edges": [10.0, 20.0],
                   "shares": [0.25, 0.5, 0.25], "minimums": [1, 11, 21], "maximums": [10, 20, 30]},
                  {"kind": "categorical", "name": "make", "columns": [1, 2], "values": ["a", "b"], "shares": [0.5, 0.5]}]}"#,
            |input| (input == "features").then_some(3),
        )
        .unwrap()
    }

    fn row(values: &[f32]) -> Vec<Tensor> {
        vec![Tensor::new("features", vec![1, 3], TensorData::Float32(values.to_vec())).unwrap()]
    }

    #[test]
    fn rows_are_counted_into_bins_and_the_oldest_leave() {
        let window = DriftWindow::new(profile(), 2);
        window.observe(&row(&[10.0, 1.0, 0.0]));
        window.observe(&row(&[10.5, 0.0, 1.0]));
        assert_eq!(window.counts().counts, vec![vec![1, 1, 0], vec![1, 1]]);
        window.observe(&row(&[99.0, 0.0, 1.0]));
        let counts = window.counts();
        assert_eq!((counts.rows, counts.counts), (2, vec![vec![0, 1, 1], vec![0, 2]]));
        // Two makes at once, or a NaN, fit no bin: not counted.
        window.observe(&row(&[5.0, 1.0, 1.0]));
        window.observe(&row(&[f32::NAN, 1.0, 0.0]));
        assert_eq!(window.counts().unfit, 2);
    }

    #[test]
    fn a_profile_that_does_not_fit_is_refused() {
        let text = |edges: &str, column: usize| {
            format!(
                r#"{{"format": "forecourt-profile", "format_version": 1, "input": "features", "row": 0, "rows": 4,
                    "features": [{{"kind": "numeric", "name": "m", "column": {column}, "edges": {edges},
                    "shares": [0.5, 0.5], "minimums": [1, 2], "maximums": [1, 2]}}]}}"#
            )
        };
        let width = |input: &str| (input == "features").then_some(3);
        assert!(Profile::parse(&text("[1.0]", 0), width).is_ok());
        assert!(Profile::parse(&text("[1.0]", 3), width).unwrap_err().contains("beyond"));
        assert!(Profile::parse(&text("[1.0, 2.0]", 0), width).unwrap_err().contains("shares"));
        assert!(Profile::parse(&text("[1.0, 1.0]", 0), width).unwrap_err().contains("increase"));
        assert!(Profile::parse(&text("[2.0, 1.0, 3.0]", 0), width).unwrap_err().contains("increase"));
        assert!(Profile::parse(&text("[1.0]", 0), |_| None).unwrap_err().contains("input"));
        assert!(Profile::parse("{}", width).is_err());
    }
}
