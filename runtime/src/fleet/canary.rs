//! How a canary is judged on live accuracy: its outcomes over the window against a
//! baseline of the active version's. Pure figures in, a verdict out; the deployer watches
//! the clock and acts on it.

use serde_json::{Value, json};

use super::messages::AccuracyGate;
use crate::bundle::Counts;

/// What the canary's error is compared with, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Baselines {
    /// The active version's outcomes over the canary's window.
    pub window: Counts,
    /// The active version's outcomes since it loaded.
    pub since_loaded: Counts,
    /// Training's held-out error (MAPE, or 1 - accuracy), when the bundle carries it.
    pub training: Option<f64>,
}

/// The accuracy part of a canary's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum AccuracyVerdict {
    /// Not enough outcomes yet (of the canary, or to compare with).
    Pending,
    Within,
    /// The canary's error breaks the threshold: the reason.
    Worse(String),
}

/// Judges the canary's outcomes over its window; returns the verdict and the figures for
/// the deployment's progress message.
pub fn judge(gate: &AccuracyGate, canary: &Counts, baselines: &Baselines) -> (AccuracyVerdict, Value) {
    let enough = |counts: &Counts| counts.outcomes >= gate.min_outcomes;
    let baseline =
        [("active version, same window", &baselines.window), ("active version, since loaded", &baselines.since_loaded)]
            .into_iter()
            .find(|(_, counts)| enough(counts))
            .and_then(|(source, counts)| Some((source, counts.error_rate()?)))
            .or_else(|| Some(("training, held out", baselines.training?)));
    let error = canary.error_rate();
    let figures = json!({
        "outcomes": canary.outcomes,
        "error": error,
        "baseline": baseline.map(|(source, value)| json!({"source": source, "error": value})),
        "thresholds": {"min_outcomes": gate.min_outcomes, "max_error_ratio": gate.max_error_ratio},
    });
    let verdict = match (enough(canary), error, baseline) {
        (true, Some(error), Some((source, base))) if error > base * gate.max_error_ratio => AccuracyVerdict::Worse(
            format!("error {error:.4} over {} times the baseline {base:.4} ({source})", gate.max_error_ratio),
        ),
        (true, Some(_), _) => AccuracyVerdict::Within,
        // Outcomes whose error is undefined (a regression's actual values all zero) are no
        // evidence either way.
        _ => AccuracyVerdict::Pending,
    };
    (verdict, figures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{OutcomeKind, OutcomeSpec, Point, VersionAccuracy};

    /// Counts of `n` outcomes each `pct` percent off.
    fn counts(n: usize, pct: f64) -> Counts {
        let accuracy = VersionAccuracy::new(Some(&OutcomeSpec {
            field: "price".into(),
            kind: OutcomeKind::Regression { minimum: 0.0, maximum: 1e9 },
        }));
        for _ in 0..n {
            accuracy.observe(Point::Regression { predicted: 100.0 + pct, actual: 100.0 });
        }
        accuracy.counts()
    }

    fn gate() -> AccuracyGate {
        AccuracyGate { min_outcomes: 10, max_error_ratio: 1.5 }
    }

    #[test]
    fn a_canary_much_worse_than_the_active_version_fails() {
        let baselines = Baselines { window: counts(10, 4.0), since_loaded: counts(50, 1.0), training: Some(0.02) };
        let (verdict, figures) = judge(&gate(), &counts(10, 8.0), &baselines);
        assert!(matches!(&verdict, AccuracyVerdict::Worse(reason) if reason.contains("same window")), "{verdict:?}");
        assert!((figures["baseline"]["error"].as_f64().unwrap() - 0.04).abs() < 1e-12, "{figures}");
        let (verdict, _) = judge(&gate(), &counts(10, 5.0), &baselines);
        assert_eq!(verdict, AccuracyVerdict::Within);
    }

    #[test]
    fn the_baseline_falls_back_to_history_then_training() {
        let thin = Baselines { window: counts(3, 1.0), since_loaded: counts(40, 1.0), training: Some(0.5) };
        let (verdict, figures) = judge(&gate(), &counts(10, 2.0), &thin);
        assert!(matches!(verdict, AccuracyVerdict::Worse(_)), "{figures}");
        assert_eq!(figures["baseline"]["source"], "active version, since loaded");

        let none = Baselines { window: counts(0, 0.0), since_loaded: counts(2, 1.0), training: Some(0.05) };
        let (verdict, figures) = judge(&gate(), &counts(10, 2.0), &none);
        assert_eq!(verdict, AccuracyVerdict::Within);
        assert_eq!(figures["baseline"]["source"], "training, held out");
    }

    #[test]
    fn too_few_outcomes_are_pending() {
        let baselines = Baselines { window: counts(10, 1.0), since_loaded: counts(10, 1.0), training: None };
        assert_eq!(judge(&gate(), &counts(9, 50.0), &baselines).0, AccuracyVerdict::Pending);
        let no_baseline = Baselines { window: Counts::default(), since_loaded: Counts::default(), training: None };
        assert_eq!(judge(&gate(), &counts(10, 50.0), &no_baseline).0, AccuracyVerdict::Within);
    }
}
