//! What one bundle version's outcomes came to: the live accuracy of its predictions since it
//! was loaded, and over its most recent outcomes. Outcomes (the truth, learnt later) are rare
//! next to requests, so a lock is fine here; requests never touch it.
//!
//! This module only counts: which outcome belongs to which version, and checking the values,
//! are the quality module's.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::manifest::{OutcomeKind, OutcomeSpec};

/// How many of the latest outcomes the recent figures cover.
pub const RECENT_OUTCOMES: usize = 500;

/// The live accuracy of one version, of the kind its `[outcome]` declares.
#[derive(Debug)]
pub struct VersionAccuracy {
    classes: Option<Vec<String>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: Counts,
    /// The latest outcomes, oldest first, at most [`RECENT_OUTCOMES`].
    recent: VecDeque<Point>,
}

/// One outcome against its prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    Regression {
        predicted: f64,
        actual: f64,
    },
    /// Class indexes into the spec's `classes`.
    Classification {
        predicted: usize,
        actual: usize,
    },
}

/// Sums that describe a set of outcomes; subtracting two gives the outcomes in between.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    pub outcomes: u64,
    abs_error: f64,
    squared_error: f64,
    /// Absolute percentage errors, over the outcomes whose actual value is not zero.
    abs_pct_error: f64,
    pct_outcomes: u64,
    /// `confusion[actual][predicted]`.
    confusion: Vec<Vec<u64>>,
}

impl Counts {
    fn add(&mut self, point: Point, classes: usize) {
        self.outcomes += 1;
        match point {
            Point::Regression { predicted, actual } => {
                let error = predicted - actual;
                self.abs_error += error.abs();
                self.squared_error += error * error;
                if actual != 0.0 {
                    self.abs_pct_error += (error / actual).abs();
                    self.pct_outcomes += 1;
                }
            }
            Point::Classification { predicted, actual } => {
                if self.confusion.is_empty() {
                    self.confusion = vec![vec![0; classes]; classes];
                }
                self.confusion[actual][predicted] += 1;
            }
        }
    }

    /// The outcomes counted in `self` and not in `earlier` (a canary's window).
    pub fn since(&self, earlier: &Counts) -> Counts {
        let confusion = if earlier.confusion.is_empty() {
            self.confusion.clone()
        } else {
            self.confusion
                .iter()
                .zip(&earlier.confusion)
                .map(|(row, before)| row.iter().zip(before).map(|(now, then)| now.saturating_sub(*then)).collect())
                .collect()
        };
        Counts {
            outcomes: self.outcomes.saturating_sub(earlier.outcomes),
            abs_error: (self.abs_error - earlier.abs_error).max(0.0),
            squared_error: (self.squared_error - earlier.squared_error).max(0.0),
            abs_pct_error: (self.abs_pct_error - earlier.abs_pct_error).max(0.0),
            pct_outcomes: self.pct_outcomes.saturating_sub(earlier.pct_outcomes),
            confusion,
        }
    }

    /// The share of outcomes the prediction got wrong: 1 - accuracy for a classifier. For a
    /// regression, the mean absolute percentage error. `None` without outcomes.
    pub fn error_rate(&self) -> Option<f64> {
        if self.outcomes == 0 {
            return None;
        }
        if self.confusion.is_empty() {
            (self.pct_outcomes > 0).then(|| self.abs_pct_error / self.pct_outcomes as f64)
        } else {
            let correct: u64 = (0..self.confusion.len()).map(|index| self.confusion[index][index]).sum();
            Some(1.0 - correct as f64 / self.outcomes as f64)
        }
    }

    fn figures(&self, classes: Option<&[String]>) -> Figures {
        let per = |sum: f64, count: u64| (count > 0).then(|| sum / count as f64);
        match classes {
            None => Figures::Regression {
                outcomes: self.outcomes,
                mae: per(self.abs_error, self.outcomes),
                mape: per(self.abs_pct_error, self.pct_outcomes),
                rmse: per(self.squared_error, self.outcomes).map(f64::sqrt),
            },
            Some(classes) => {
                let matrix = if self.confusion.is_empty() {
                    vec![vec![0; classes.len()]; classes.len()]
                } else {
                    self.confusion.clone()
                };
                Figures::Classification {
                    outcomes: self.outcomes,
                    accuracy: self.error_rate().map(|wrong| 1.0 - wrong),
                    confusion_matrix: ConfusionMatrix { labels: classes.to_vec(), rows_true_cols_predicted: matrix },
                }
            }
        }
    }
}

/// Accuracy over a set of outcomes, in the shape training's metrics.json uses, so that the
/// two can be read side by side. A figure is `null` without outcomes to compute it from.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figures {
    Regression {
        outcomes: u64,
        /// Mean absolute error, in the output's unit.
        mae: Option<f64>,
        /// Mean absolute percentage error, as a fraction (0.05 is 5%), over outcomes not zero.
        mape: Option<f64>,
        /// Root mean squared error, in the output's unit.
        rmse: Option<f64>,
    },
    Classification {
        outcomes: u64,
        accuracy: Option<f64>,
        confusion_matrix: ConfusionMatrix,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConfusionMatrix {
    pub labels: Vec<String>,
    /// `rows_true_cols_predicted[actual][predicted]`: outcomes of class `labels[actual]` that
    /// were predicted `labels[predicted]`.
    pub rows_true_cols_predicted: Vec<Vec<u64>>,
}

/// Both views of a version's accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AccuracyReport {
    /// Every outcome of this version's predictions since it was loaded.
    pub since_loaded: Figures,
    /// The latest outcomes, at most [`RECENT_OUTCOMES`].
    pub recent: Figures,
}

impl VersionAccuracy {
    pub fn new(spec: Option<&OutcomeSpec>) -> Self {
        let classes = spec.and_then(|spec| match &spec.kind {
            OutcomeKind::Classification { classes } => Some(classes.clone()),
            OutcomeKind::Regression { .. } => None,
        });
        Self { classes, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one outcome. A point of the other kind, or a class index out of range, is a
    /// caller's bug and is ignored rather than counted wrong.
    pub fn observe(&self, point: Point) {
        let classes = self.classes.as_ref().map_or(0, Vec::len);
        let fits = match point {
            Point::Regression { predicted, actual } => {
                self.classes.is_none() && predicted.is_finite() && actual.is_finite()
            }
            Point::Classification { predicted, actual } => predicted < classes && actual < classes,
        };
        if !fits {
            tracing::warn!(?point, "an outcome that does not fit this version's kind is not counted");
            return;
        }
        let mut state = self.state();
        state.total.add(point, classes);
        if state.recent.len() == RECENT_OUTCOMES {
            state.recent.pop_front();
        }
        state.recent.push_back(point);
    }

    /// The counts since the version was loaded, to compare with later ones.
    pub fn counts(&self) -> Counts {
        self.state().total.clone()
    }

    pub fn report(&self) -> AccuracyReport {
        let state = self.state();
        let classes = self.classes.as_ref().map_or(0, Vec::len);
        let mut recent = Counts::default();
        for point in &state.recent {
            recent.add(*point, classes);
        }
        AccuracyReport {
            since_loaded: state.total.figures(self.classes.as_deref()),
            recent: recent.figures(self.classes.as_deref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regression() -> VersionAccuracy {
        VersionAccuracy::new(Some(&OutcomeSpec {
            field: "price".into(),
            kind: OutcomeKind::Regression { minimum: 0.0, maximum: 1e6 },
        }))
    }

    #[test]
    fn regression_figures_are_the_textbook_ones() {
        let accuracy = regression();
        // Errors +10, -20, +0 against actual values 100, 200, 0 (the last has no percentage).
        for (predicted, actual) in [(110.0, 100.0), (180.0, 200.0), (5.0, 0.0)] {
            accuracy.observe(Point::Regression { predicted, actual });
        }
        let Figures::Regression { outcomes, mae, mape, rmse } = accuracy.report().since_loaded else { panic!() };
        assert_eq!(outcomes, 3);
        assert!((mae.unwrap() - 35.0 / 3.0).abs() < 1e-12);
        assert!((mape.unwrap() - 0.1).abs() < 1e-12, "{mape:?}");
        assert!((rmse.unwrap() - (525.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn without_outcomes_the_figures_are_absent() {
        let report = regression().report();
        assert_eq!(report.recent, Figures::Regression { outcomes: 0, mae: None, mape: None, rmse: None });
        assert_eq!(serde_json::to_value(&report.recent).unwrap()["mae"], serde_json::Value::Null);
    }

    #[test]
    fn the_recent_figures_forget_the_oldest_outcomes() {
        let accuracy = regression();
        accuracy.observe(Point::Regression { predicted: 1000.0, actual: 100.0 });
        for _ in 0..RECENT_OUTCOMES {
            accuracy.observe(Point::Regression { predicted: 101.0, actual: 100.0 });
        }
        let report = accuracy.report();
        let Figures::Regression { outcomes, mae, .. } = report.recent else { panic!() };
        assert_eq!((outcomes, mae), (RECENT_OUTCOMES as u64, Some(1.0)));
        let Figures::Regression { outcomes, mae, .. } = report.since_loaded else { panic!() };
        assert_eq!(outcomes, RECENT_OUTCOMES as u64 + 1);
        assert!(mae.unwrap() > 1.0);
    }

    #[test]
    fn a_classifier_counts_its_confusion_and_a_window_subtracts() {
        let classes = vec!["a".to_owned(), "b".to_owned()];
        let accuracy = VersionAccuracy::new(Some(&OutcomeSpec {
            field: "class".into(),
            kind: OutcomeKind::Classification { classes: classes.clone() },
        }));
        accuracy.observe(Point::Classification { predicted: 0, actual: 0 });
        let before = accuracy.counts();
        accuracy.observe(Point::Classification { predicted: 1, actual: 0 });
        accuracy.observe(Point::Classification { predicted: 1, actual: 1 });
        let Figures::Classification { outcomes, accuracy: share, confusion_matrix } = accuracy.report().since_loaded
        else {
            panic!()
        };
        assert_eq!((outcomes, share), (3, Some(2.0 / 3.0)));
        assert_eq!(
            confusion_matrix,
            ConfusionMatrix { labels: classes, rows_true_cols_predicted: vec![vec![1, 1], vec![0, 1]] }
        );
        let window = accuracy.counts().since(&before);
        assert_eq!(window.outcomes, 2);
        assert_eq!(window.error_rate(), Some(0.5));
    }
}
