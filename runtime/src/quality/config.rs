//! `[quality]` in forecourt.toml: the drift check's window and cadence.

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, check_range};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Whether each version whose bundle carries a training profile keeps a window of the
    /// features it fed its model, to judge drift. Off, requests do no drift work at all.
    pub drift: bool,
    /// Rows (requests) the drift window holds: the latest ones.
    pub drift_window: usize,
    /// Rows the window must hold before drift figures are published (see `quality::drift`).
    pub drift_min_rows: usize,
    /// How often drift is judged (gauges updated, a `drift` event on a change of status).
    pub drift_check_secs: u64,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self { drift: true, drift_window: 1000, drift_min_rows: 500, drift_check_secs: 5 }
    }
}

impl QualityConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("quality.drift_window", self.drift_window, 10, 1_000_000)?;
        check_range("quality.drift_min_rows", self.drift_min_rows, 1, self.drift_window)?;
        check_range("quality.drift_check_secs", self.drift_check_secs, 1, 3600)?;
        Ok(())
    }

    /// The drift window's rows, zero when drift is off.
    pub fn window_rows(&self) -> usize {
        if self.drift { self.drift_window } else { 0 }
    }
}
