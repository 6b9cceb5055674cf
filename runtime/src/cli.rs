//! The `forecourt` command line (clap derive). Subcommands are thin: they parse
//! arguments, call the library, and print.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::plugin::{PluginConfig, PluginError, PluginHost};

#[derive(Debug, Parser)]
#[command(name = "forecourt", version, about = "The Forecourt edge inference appliance")]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "FORECOURT_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and try preprocessing plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print what a plugin says about itself (name, version, input fields, outputs) as JSON.
    Describe {
        /// The plugin's .wasm component.
        wasm: PathBuf,
    },
    /// Preprocess one request and print the tensors as JSON.
    Preprocess {
        wasm: PathBuf,
        /// The request JSON.
        request: String,
    },
}

/// Logs go to stderr so that command output on stdout stays machine-readable.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FORECOURT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Plugin(command) => plugin_command(command),
    }
}

fn plugin_command(command: PluginCommand) -> anyhow::Result<()> {
    let host = PluginHost::new(&PluginConfig::default(), None)?;
    match command {
        PluginCommand::Describe { wasm } => {
            let plugin = host.load(&wasm)?;
            println!("{}", serde_json::to_string_pretty(plugin.info())?);
        }
        PluginCommand::Preprocess { wasm, request } => {
            let plugin = host.load(&wasm)?;
            match plugin.preprocess(&request) {
                Ok(tensors) => println!("{}", serde_json::to_string_pretty(&tensors)?),
                Err(PluginError::Input(error)) => {
                    println!("{}", serde_json::to_string_pretty(&error)?);
                    anyhow::bail!("the plugin refused the request");
                }
                Err(error) => return Err(error).context("preprocessing failed"),
            }
        }
    }
    Ok(())
}
