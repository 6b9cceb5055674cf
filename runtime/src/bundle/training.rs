//! The figures a bundle's training measured on held-out rows (`metrics.test` of the
//! metrics.json that `train.py` writes and the bundle carries, signed), to stand beside the
//! live ones. Read once, when the bundle loads; a bundle whose file is unusable still
//! serves, without the figures (they are for display and a canary's last baseline).

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::Manifest;

/// The most of metrics.json read: it is a page of figures, not data.
const MAX_METRICS_BYTES: u64 = 1 << 20;

/// Held-out figures from training; each absent when training did not report it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TrainingFigures {
    /// Held-out rows the figures come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mape: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// What training said about its figures (for example which row they are for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TrainingFigures {
    /// (metric label, value) of the numeric figures present, for the metrics.
    pub fn numbers(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [("mae", self.mae), ("mape", self.mape), ("rmse", self.rmse), ("r2", self.r2), ("accuracy", self.accuracy)]
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value)))
    }
}

/// The training figures of the bundle in `dir`; `None` when it carries no metrics.json, or
/// one without `metrics.test` (a warning says which).
pub(super) fn read(manifest: &Manifest, dir: &Path) -> Option<TrainingFigures> {
    let file = manifest.training.metrics.as_ref()?;
    let path = dir.join(&file.file);
    let mut text = String::new();
    let read = std::fs::File::open(&path).and_then(|f| f.take(MAX_METRICS_BYTES).read_to_string(&mut text));
    let parsed = read.map_err(|error| error.to_string()).and_then(|_| parse(&text));
    match parsed {
        Ok(figures) => Some(figures),
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "the bundle's training metrics are not usable");
            None
        }
    }
}

fn parse(text: &str) -> Result<TrainingFigures, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let metrics = value.get("metrics").ok_or("no `metrics` object")?;
    let test = metrics.get("test").and_then(Value::as_object).ok_or("no `metrics.test` object")?;
    let number = |key: &str| test.get(key).and_then(Value::as_f64).filter(|value| value.is_finite());
    Ok(TrainingFigures {
        rows: test.get("rows").and_then(Value::as_u64),
        mae: number("mae"),
        mape: number("mape"),
        rmse: number("rmse"),
        r2: number("r2"),
        accuracy: number("accuracy"),
        note: metrics.get("note").and_then(Value::as_str).map(|note| note.chars().take(500).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_out_figures_are_read_and_the_rest_ignored() {
        let figures = parse(
            r#"{"metrics": {"note": "today's price", "test": {"mae": 1522.9, "rmse": 2153.5, "rows": 161,
                "mape": 0.0675, "r2": 0.96, "extra": [1]}, "train": {"mae": 1.0}}}"#,
        )
        .unwrap();
        assert_eq!(figures.mae, Some(1522.9));
        assert_eq!(figures.rows, Some(161));
        assert_eq!(figures.accuracy, None);
        assert_eq!(figures.note.as_deref(), Some("today's price"));
        assert_eq!(figures.numbers().count(), 4);
        assert!(parse(r#"{"metrics": {}}"#).unwrap_err().contains("metrics.test"));
        assert!(parse("[1]").is_err());
    }
}
