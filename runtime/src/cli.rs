//! The `forecourt` command line (clap derive). Subcommands are thin: they parse
//! arguments, call the library, and print.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::bundle::{Manifest, build};
use crate::config::Config;
use crate::plugin::{PluginConfig, PluginError, PluginHost};
use crate::telemetry::{LoggingConfig, init_logging};

#[derive(Debug, Parser)]
#[command(name = "forecourt", version, about = "The Forecourt edge inference appliance")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve predictions over HTTP (the appliance).
    Serve {
        /// forecourt.toml; without it, defaults and FORECOURT_* environment variables.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Build and inspect bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Inspect and try preprocessing plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print the effective configuration (defaults, file, environment) as TOML.
    Config {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a plugin crate for wasm32-wasip2 and assemble its bundle.
    Build {
        /// The plugin's folder (a crate with model/model.onnx), e.g. plugins/car-price.
        plugin: PathBuf,
        /// Where bundles go (`<out>/<name>/<version>/`).
        #[arg(long, default_value = "bundles")]
        out: PathBuf,
        /// Golden rows to keep as smoke-test samples.
        #[arg(long, default_value_t = build::DEFAULT_SAMPLES)]
        samples: usize,
        /// Cargo's target folder for the wasm build (default: cargo's own choice).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
    /// Print a bundle's manifest and check its files' digests.
    Inspect {
        /// The bundle's folder (holding bundle.toml).
        bundle: PathBuf,
    },
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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the audit chain of a stopped appliance's data folder; exits 1 if it is broken.
    Verify {
        /// The data folder (config `data_dir`).
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let config = Config::load(config.as_deref())?;
            init_logging(&config.logging);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(crate::app::serve(config))
        }
        Command::Bundle(command) => {
            init_quiet_logging();
            bundle_command(command)
        }
        Command::Plugin(command) => {
            init_quiet_logging();
            plugin_command(command)
        }
        Command::Config { config } => {
            print!("{}", toml::to_string_pretty(&Config::load(config.as_deref())?)?);
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { data }) => {
            init_quiet_logging();
            let report = crate::store::verify_audit_at(&data.join("store")).with_context(|| {
                format!("cannot open the store in {}: is the appliance still running? Stop it first, or use GET /v1/audit/verify", data.display())
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(report.ok, "the audit chain is broken");
            Ok(())
        }
    }
}

/// Commands other than `serve` log warnings only, to stderr.
fn init_quiet_logging() {
    init_logging(&LoggingConfig { level: "warn".to_owned(), ..LoggingConfig::default() });
}

fn bundle_command(command: BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Build { plugin, out, samples, target_dir } => {
            let host = PluginHost::new(&PluginConfig::default(), None)?;
            let dir = build::build(&plugin, &out, &host, samples, target_dir.as_deref())?;
            println!("{}", dir.display());
        }
        BundleCommand::Inspect { bundle } => {
            let manifest = Manifest::read(&bundle)?;
            manifest.verify_files(&bundle).context("the bundle's files do not match its manifest")?;
            println!("{}", toml::to_string_pretty(&manifest)?);
        }
    }
    Ok(())
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
