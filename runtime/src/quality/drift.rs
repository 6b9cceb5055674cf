//! Drift: how far the features a version fed its model lately are from its training
//! profile. Per feature the population stability index (PSI) over the profile's bins, and
//! for a categorical feature also the total variation distance; a status per feature and
//! for the version (the worst), judged against the bundle's `[drift]` thresholds.
//!
//! A figure is published only once the window holds `min_rows` rows: PSI over a few dozen
//! rows is noise. With k bins and n live rows against m training rows, an unchanged
//! population still scores about (k - 1)(1/n + 1/m) on average; for car-price's ten mileage
//! bins and 643 training rows that is 0.10 at n = 100 (a false warning), 0.032 at n = 500
//! and 0.023 at n = 1000. Hence the defaults: a window of 1000 rows, judged from 500.

use serde::Serialize;

use crate::bundle::{DriftThresholds, DriftWindow, Feature};

/// A share below this counts as this, so that an empty bin does not make the PSI infinite.
const SHARE_FLOOR: f64 = 1e-4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    Ok,
    Warn,
    Alert,
}

impl DriftStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Alert => "alert",
        }
    }

    /// 0, 1, 2: the gauge's value.
    pub fn level(self) -> f64 {
        f64::from(self as u8)
    }

    fn of(psi: f64, thresholds: &DriftThresholds) -> Self {
        if psi >= thresholds.alert_psi {
            Self::Alert
        } else if psi >= thresholds.warn_psi {
            Self::Warn
        } else {
            Self::Ok
        }
    }
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FeatureDrift {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    pub psi: f64,
    /// Categorical features: the total variation distance (half the sum of the absolute
    /// differences of the shares), from 0 (same) to 1 (disjoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f64>,
    pub status: DriftStatus,
    /// The bins (`≤ 8142`, `8142 to 12944`, `> 29359`) or values.
    pub bins: Vec<String>,
    /// Training's share of each bin, and the window's.
    pub training: Vec<f64>,
    pub live: Vec<f64>,
}

/// A version's drift at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DriftFigures {
    /// Rows in the window.
    pub rows: usize,
    /// Rows needed before figures are published.
    pub min_rows: usize,
    /// Requests whose features fit none of the profile's bins (not counted).
    pub unfit: u64,
    #[schema(value_type = Object)]
    pub thresholds: DriftThresholds,
    /// The worst feature's status; absent until the window holds `min_rows` rows.
    pub status: Option<DriftStatus>,
    /// Empty until the window holds `min_rows` rows.
    pub features: Vec<FeatureDrift>,
}

/// The population stability index of `counts` (over `rows`) against the `expected` shares.
pub fn psi(expected: &[f64], counts: &[u64], rows: usize) -> f64 {
    expected
        .iter()
        .zip(counts)
        .map(|(&expected, &count)| {
            let (e, a) = (expected.max(SHARE_FLOOR), (count as f64 / rows.max(1) as f64).max(SHARE_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Judges a window against its profile.
pub fn judge(window: &DriftWindow, thresholds: DriftThresholds, min_rows: usize) -> DriftFigures {
    let counts = window.counts();
    let ready = counts.rows >= min_rows && counts.rows > 0;
    let features: Vec<FeatureDrift> = if ready {
        window
            .profile()
            .features
            .iter()
            .zip(&counts.counts)
            .map(|(feature, counts)| feature_drift(feature, counts, thresholds))
            .collect()
    } else {
        Vec::new()
    };
    DriftFigures {
        rows: counts.rows,
        min_rows,
        unfit: counts.unfit,
        thresholds,
        status: features.iter().map(|feature| feature.status).max().filter(|_| ready),
        features,
    }
}

fn feature_drift(feature: &Feature, counts: &[u64], thresholds: DriftThresholds) -> FeatureDrift {
    let rows: u64 = counts.iter().sum();
    let live: Vec<f64> = counts.iter().map(|&count| count as f64 / rows.max(1) as f64).collect();
    let training = feature.shares().to_vec();
    let psi = psi(&training, counts, rows as usize);
    let (kind, distance, bins) = match feature {
        Feature::Numeric { edges, .. } => ("numeric", None, bin_labels(edges)),
        Feature::Categorical { values, .. } => {
            let distance = training.iter().zip(&live).map(|(t, l)| (t - l).abs()).sum::<f64>() / 2.0;
            ("categorical", Some(distance), values.clone())
        }
    };
    FeatureDrift {
        name: feature.name().to_owned(),
        kind,
        psi,
        distance,
        status: DriftStatus::of(psi, &thresholds),
        bins,
        training,
        live,
    }
}

fn bin_labels(edges: &[f64]) -> Vec<String> {
    let mut labels = Vec::with_capacity(edges.len() + 1);
    labels.push(format!("≤ {}", edges[0]));
    labels.extend(edges.windows(2).map(|pair| format!("{} to {}", pair[0], pair[1])));
    labels.push(format!("> {}", edges[edges.len() - 1]));
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Profile;
    use crate::tensor::{Tensor, TensorData};

    fn window(capacity: usize) -> DriftWindow {
        let profile = Profile::parse(
            r#"{"format": "forecourt-profile", "format_version": 1, "input": "x", "row": 0, "rows": 100,
                "features": [
                  {"kind": "numeric", "name": "n", "column": 0, "edges": [1.0],
                   "shares": [0.5, 0.5], "minimums": [0, 2], "maximums": [1, 3]},
                  {"kind": "categorical", "name": "c", "columns": [1, 2], "values": ["a", "b"], "shares": [0.5, 0.5]}]}"#,
            |_| Some(3),
        )
        .unwrap();
        DriftWindow::new(profile, capacity)
    }

    fn feed(window: &DriftWindow, n: f32, c: usize, times: usize) {
        let mut row = vec![n, 0.0, 0.0];
        row[1 + c] = 1.0;
        for _ in 0..times {
            window.observe(&[Tensor::new("x", vec![1, 3], TensorData::Float32(row.clone())).unwrap()]);
        }
    }

    #[test]
    fn psi_is_zero_for_the_same_shares_and_grows_with_the_shift() {
        assert_eq!(psi(&[0.5, 0.5], &[50, 50], 100), 0.0);
        let small = psi(&[0.5, 0.5], &[55, 45], 100);
        let large = psi(&[0.5, 0.5], &[90, 10], 100);
        assert!(0.0 < small && small < 0.1 && large > 0.25, "{small} {large}");
        // An empty bin is floored, not infinite.
        assert!(psi(&[0.5, 0.5], &[100, 0], 100).is_finite());
    }

    #[test]
    fn no_figure_before_min_rows_then_the_shifted_feature_alone_alerts() {
        let window = window(100);
        feed(&window, 0.5, 0, 25);
        feed(&window, 2.5, 1, 25);
        let early = judge(&window, DriftThresholds::default(), 60);
        assert_eq!((early.rows, early.status, early.features.len()), (50, None, 0));

        feed(&window, 0.5, 1, 25);
        feed(&window, 2.5, 0, 25);
        let steady = judge(&window, DriftThresholds::default(), 60);
        assert_eq!(steady.status, Some(DriftStatus::Ok), "{steady:?}");

        // Every numeric value now in the top bin; the categorical mix unchanged.
        feed(&window, 3.0, 0, 50);
        feed(&window, 3.0, 1, 50);
        let shifted = judge(&window, DriftThresholds::default(), 60);
        let statuses: Vec<_> = shifted.features.iter().map(|f| (f.name.as_str(), f.status)).collect();
        assert_eq!(statuses, [("n", DriftStatus::Alert), ("c", DriftStatus::Ok)]);
        assert_eq!(shifted.status, Some(DriftStatus::Alert));
        assert_eq!(shifted.features[0].bins, ["≤ 1", "> 1"]);
        assert_eq!(shifted.features[1].distance, Some(0.0));
    }
}
