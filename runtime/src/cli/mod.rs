//! The `forecourt` command line (clap derive). Subcommands are thin: they parse
//! arguments, call the library, and print.
//!
//! - [`fleet`]: `forecourt fleet`, the fleet manager's commands (push, rollback, remove, status).

pub mod fleet;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::bundle::signature::{self, PrivateKey};
use crate::bundle::{Manifest, archive, build};
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
    /// Make an ed25519 key pair for signing bundles: NAME.key (private) and NAME.pub.
    Keygen {
        /// The folder the two files go to (made if needed).
        #[arg(long)]
        out: PathBuf,
        /// The files' name.
        #[arg(long, default_value = "forecourt")]
        name: String,
    },
    /// Build, inspect, sign and pack bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Inspect and try preprocessing plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage a fleet of appliances over MQTT: push bundles, roll back, watch statuses.
    #[command(subcommand)]
    Fleet(Box<fleet::FleetCommand>),
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
    /// Sign a bundle's manifest (which holds every file's sha256): writes bundle.sig beside it.
    Sign {
        /// The bundle's folder (holding bundle.toml).
        bundle: PathBuf,
        /// The private key (NAME.key from `forecourt keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Pack a bundle into one transport file (.fcb, a tar).
    Pack {
        /// The bundle's folder (holding bundle.toml).
        bundle: PathBuf,
        /// The file to write, e.g. car-price-1.0.0.fcb.
        #[arg(long)]
        out: PathBuf,
    },
    /// Unpack a .fcb file into `<out>/<name>-<version>/` (refusing anything but a bundle's files).
    Unpack {
        /// The .fcb file.
        file: PathBuf,
        /// The folder to unpack into.
        #[arg(long)]
        out: PathBuf,
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
        Command::Keygen { out, name } => {
            init_quiet_logging();
            let key = signature::keygen(&out, &name)?;
            println!("key id {}", key.id);
            println!("private key {} (keep it secret)", key.private.display());
            println!("public key {} (copy it to the appliances' [trust] keys_dir)", key.public.display());
            Ok(())
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
        Command::Fleet(command) => {
            let command = *command;
            init_quiet_logging();
            fleet::run(command)
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
        BundleCommand::Sign { bundle, key } => {
            let key = PrivateKey::read(&key)?;
            let path = signature::sign_bundle(&bundle, &key)?;
            println!("{} (key id {})", path.display(), key.id());
        }
        BundleCommand::Pack { bundle, out } => {
            archive::pack(&bundle, &out)?;
            println!("{}", out.display());
        }
        BundleCommand::Unpack { file, out } => {
            println!("{}", archive::unpack(&file, &out)?.display());
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
