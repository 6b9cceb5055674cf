//! The `forecourt` command line (clap derive). Subcommands are thin: they parse
//! arguments, call the library, and print. `forecourt fleet` is mounted from
//! `forecourt_fleet_manager::cli`.

use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use forecourt::auth::{Role, TokenFile};
use forecourt::bundle::signature::{self, PrivateKey};
use forecourt::bundle::{Manifest, archive, build};
use forecourt::config::Config;
use forecourt::plugin::{PluginConfig, PluginError, PluginHost};
use forecourt::telemetry::{LoggingConfig, init_logging};

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
    /// API tokens: add (printed once), list, revoke. The appliance picks changes up while
    /// running.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage a fleet of appliances over MQTT: push bundles, roll back, watch statuses.
    #[command(subcommand)]
    Fleet(Box<forecourt_fleet_manager::cli::FleetCommand>),
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
pub enum TokenCommand {
    /// Make a token and print it on stdout (once: only its digest is kept).
    Add {
        /// What the token may do: kiosk (predict, read its own predictions), viewer (read
        /// predictions, bundles, audit, detailed health), admin (everything), metrics (/metrics).
        #[arg(long)]
        role: Role,
        /// Who or what holds it, e.g. front-desk (letters, digits, `.`, `_`, `-`).
        #[arg(long)]
        name: String,
        /// Requests per second it may make (a token bucket); default: no limit.
        #[arg(long)]
        rate: Option<NonZeroU32>,
        /// Requests it may make at once within its rate; default: one second's worth.
        #[arg(long, requires = "rate")]
        burst: Option<NonZeroU32>,
        /// Also write the token to this file (mode 0600), e.g. for a first-boot admin token.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the tokens (ids, names, roles, rates; never secrets).
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a token by id or name; a running appliance refuses it within auth.reload_interval_ms.
    Revoke {
        /// The token's id (16 hex digits) or its name.
        token: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The configuration `serve` uses, to find the token file.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// forecourt.toml, as given to `serve` (FORECOURT_* variables apply too).
    #[arg(long, short)]
    config: Option<PathBuf>,
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
            runtime.block_on(forecourt::app::serve(config))
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
            let store = data.join("store");
            // Say what is wrong: a missing folder is not a running appliance's lock.
            anyhow::ensure!(
                store.is_dir(),
                "there is no store in {} (no {} folder): pass the appliance's data_dir with --data",
                data.display(),
                store.display()
            );
            let report = forecourt::store::verify_audit_at(&store).with_context(|| {
                format!("cannot open the store in {}: is the appliance still running? Stop it first, or use GET /v1/audit/verify", data.display())
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(report.ok, "the audit chain is broken");
            Ok(())
        }
        Command::Token(command) => {
            init_quiet_logging();
            token_command(command)
        }
        Command::Fleet(command) => {
            let command = *command;
            init_quiet_logging();
            forecourt_fleet_manager::cli::run(command)
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
            if !bundle.join(signature::SIGNATURE_FILE).is_file() {
                // Packing an unsigned bundle is legitimate (a key-less appliance loads it),
                // but an appliance with keys_dir refuses it: say so before it travels.
                eprintln!(
                    "warning: {} has no {}: appliances with [trust] keys_dir refuse it (sign it with `forecourt bundle sign`)",
                    bundle.display(),
                    signature::SIGNATURE_FILE
                );
            }
            archive::pack(&bundle, &out)?;
            println!("{}", out.display());
        }
        BundleCommand::Unpack { file, out } => {
            println!("{}", archive::unpack(&file, &out)?.display());
        }
    }
    Ok(())
}

fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    let file_of = |arg: &ConfigArg| -> anyhow::Result<TokenFile> {
        Ok(TokenFile::new(Config::load(arg.config.as_deref())?.tokens_file()))
    };
    match command {
        TokenCommand::Add { role, name, rate, burst, out, config } => {
            let file = file_of(&config)?;
            let (entry, issued) = file.add(&name, role, rate, burst)?;
            if let Some(out) = out {
                write_secret_file(&out, &issued.token).with_context(|| {
                    format!("the token {} was added but cannot be written to {}", entry.id, out.display())
                })?;
                eprintln!("token written to {}", out.display());
            }
            eprintln!(
                "token {} ({}, role {}) added to {}; it is shown once, here:",
                entry.id,
                entry.name,
                entry.role,
                file.path().display()
            );
            println!("{}", issued.token);
        }
        TokenCommand::List { json, config } => {
            let tokens = file_of(&config)?.read()?;
            if json {
                let listed: Vec<_> = tokens
                    .iter()
                    .map(|token| {
                        serde_json::json!({"id": token.id, "name": token.name, "role": token.role, "created": token.created,
                            "rate_per_sec": token.rate_per_sec, "burst": token.burst, "revoked": token.revoked})
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                let mut table = comfy_table::Table::new();
                table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
                table.set_header(["id", "name", "role", "rate/s", "burst", "created", "revoked"]);
                for token in &tokens {
                    let number = |value: Option<NonZeroU32>| value.map_or("-".to_owned(), |value| value.to_string());
                    table.add_row([
                        token.id.to_string(),
                        token.name.clone(),
                        token.role.to_string(),
                        number(token.rate_per_sec),
                        number(token.burst.or(token.rate_per_sec)),
                        token.created.clone(),
                        token.revoked.clone().unwrap_or_else(|| "-".to_owned()),
                    ]);
                }
                println!("{table}");
            }
        }
        TokenCommand::Revoke { token, config } => {
            let file = file_of(&config)?;
            let revoked = file.revoke(&token)?;
            println!("revoked {} ({}, role {})", revoked.id, revoked.name, revoked.role);
        }
    }
    Ok(())
}

/// Writes `secret` to a new file only its owner can read; never over an existing file.
fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fleet_commands_are_mounted_under_fleet() {
        let cli = Cli::try_parse_from(["forecourt", "fleet", "status", "--broker", "mqtt://b"]).unwrap();
        assert!(matches!(cli.command, Command::Fleet(_)));
        assert!(Cli::try_parse_from(["forecourt", "push"]).is_err());
    }
}
