//! `[logging]` and the tracing subscriber.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Pretty,
    /// One JSON object per line, for the journal and log shippers.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A tracing filter: a level (`info`) or per-module directives
    /// (`info,forecourt::http=debug`). `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, level: "info".to_owned() }
    }
}

/// ONNX Runtime logs hundreds of INFO lines while it loads a model (graph passes, kernel
/// choices): its own directive keeps it at warn unless `level` names it.
fn with_quiet_libraries(level: &str) -> String {
    if level.split(',').any(|directive| directive.trim_start().starts_with("ort")) {
        level.to_owned()
    } else {
        format!("{level},ort=warn")
    }
}

/// Installs the global subscriber. Logs go to stderr; stdout is for command output.
/// Span fields (the request id) appear on every line logged inside the span. Colours only
/// on a terminal: the journal, a file or a pipe get plain text.
pub fn init_logging(config: &LoggingConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(with_quiet_libraries(&config.level)))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(with_quiet_libraries("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second init (tests starting several servers in one process) keeps the first.
    let _ = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_runtime_is_kept_at_warn_unless_the_level_names_it() {
        assert_eq!(with_quiet_libraries("info"), "info,ort=warn");
        assert_eq!(with_quiet_libraries("debug,ort=info"), "debug,ort=info");
    }
}
