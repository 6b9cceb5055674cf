//! `forecourt fleet`: the fleet manager's commands. Pushes, rollbacks and removals are
//! followed live (a spinner line per device on a terminal, one plain line per progress
//! message otherwise) and end with a table of outcomes; `status` prints the retained
//! statuses.
//!
//! This file owns the arguments and everything printed; the MQTT session and the rules of
//! when a deployment is over are [`crate::manager`]'s. Tables and summaries go to
//! stdout, progress and warnings to stderr, so that the outcome can be piped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table, presets};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::manager::{
    BundleFile, Credentials, DEFAULT_SETTLE, DEFAULT_VALID_FOR, DeviceOutcome, FleetManager, ManagerError, Observation,
    Outcome, PushOptions, Target, classify,
};
use forecourt_protocol::bundle::signature::PrivateKey;
use forecourt_protocol::fleet::BrokerAddress;
use forecourt_protocol::fleet::Topics;
use forecourt_protocol::fleet::messages::{
    AccuracyGate, BundleName, CanaryPolicy, DeploymentId, History, Progress, Reason, Status, Step,
};
use forecourt_protocol::fleet::signed;

/// Where the broker password comes from when `--password-file` is not given: never from
/// the command line, which every user of the machine can read in the process list.
pub const PASSWORD_ENV: &str = "FORECOURT_FLEET_PASSWORD";

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Push a bundle (.fcb) to a device or a group, and follow it to one outcome per device.
    Push(PushArgs),
    /// Make the version of a bundle that was active before the current one active again.
    Rollback(RollbackArgs),
    /// Unload an inactive version of a bundle and delete its files.
    Remove(RemoveArgs),
    /// Print every device's retained status.
    Status(StatusArgs),
    /// Print a device's latest deployments (or every device's), newest first, from the
    /// history it keeps retained on the broker.
    History(HistoryArgs),
    /// Sign a request (JSON on stdin) for a device or a group and print the envelope to
    /// publish, for tools of your own that publish requests.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// The fleet's broker, mqtt://host:port (port 1883 when left out) or over TLS
    /// mqtts://host:port (port 8883).
    #[arg(long, value_name = "URL", value_parser = parse_broker)]
    pub broker: BrokerAddress,
    /// The first level of every topic: the appliances' mqtt.topic_prefix.
    #[arg(long, default_value = "forecourt")]
    pub prefix: String,
    /// With mqtts://: the CA certificates (PEM) the broker's must chain to (default: the
    /// system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With mqtts://: a client certificate (PEM) for brokers that ask for one; needs --key-file.
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// The user name for brokers that ask for one. The password is read from
    /// --password-file, or else from the FORECOURT_FLEET_PASSWORD environment variable.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// A file holding the broker password (one line; a trailing newline is ignored).
    #[arg(long, value_name = "FILE", requires = "username")]
    pub password_file: Option<PathBuf>,
}

impl BrokerArgs {
    /// The broker with the TLS files of the command line.
    fn address(&self) -> anyhow::Result<BrokerAddress> {
        let mut address = self.broker.clone();
        match &mut address.tls {
            Some(tls) => {
                tls.ca_file = self.ca_file.clone();
                tls.client_auth = self.cert_file.clone().zip(self.key_file.clone());
            }
            None if self.ca_file.is_some() || self.cert_file.is_some() => {
                anyhow::bail!("--ca-file, --cert-file and --key-file need an mqtts:// broker")
            }
            None => {}
        }
        Ok(address)
    }

    /// The user name and password, when --username is given.
    fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let Some(username) = self.username.clone() else { return Ok(None) };
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| anyhow::anyhow!("cannot read --password-file {}: {error}", path.display()))?;
                text.strip_suffix('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).unwrap_or(&text).to_owned()
            }
            None => std::env::var(PASSWORD_ENV).map_err(|_| {
                anyhow::anyhow!("--username needs a password: give --password-file FILE or set {PASSWORD_ENV}")
            })?,
        };
        Ok(Some(Credentials { username, password }))
    }

    async fn connect(&self) -> anyhow::Result<FleetManager> {
        Ok(FleetManager::connect(&self.address()?, &self.prefix, self.credentials()?.as_ref()).await?)
    }
}

#[derive(Debug, Args)]
pub struct SigningArgs {
    /// The fleet's private key (`forecourt keygen`), whose public key the appliances trust
    /// in [trust] keys_dir: every request is signed, for its target and until it expires.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// How long the signed request may still be carried out after it is sent (a device
    /// that is offline gets it when it is back), e.g. 10m, 1h [default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub valid_for: Option<Duration>,
}

impl SigningArgs {
    fn key(&self) -> anyhow::Result<PrivateKey> {
        Ok(PrivateKey::read(&self.key)?)
    }

    fn valid_for(&self) -> Duration {
        self.valid_for.unwrap_or(DEFAULT_VALID_FOR)
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// One appliance, by its device id.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Every online appliance of a group.
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target {
        match (&self.device, &self.group) {
            (Some(device), _) => Target::Device(device.clone()),
            (None, Some(group)) => Target::Group(group.clone()),
            // clap's group makes one of the two required.
            (None, None) => unreachable!("--device or --group is required"),
        }
    }
}

/// How long a command waits for the devices' outcomes unless told.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// How long to wait for every device's outcome, e.g. 60s, 2m, 1m30s [default: 60s; for
    /// a push with a canary, its window plus 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// With --group: wait until at least N devices answered, for fleets whose statuses are
    /// not all at the broker yet.
    #[arg(long, value_name = "N", conflicts_with = "device", value_parser = clap::value_parser!(u32).range(1..))]
    pub expect: Option<u32>,
    /// The deployment id: 1 to 64 letters, digits, '-' or '_' (default: a new UUIDv7).
    #[arg(long, value_parser = parse_id)]
    pub id: Option<DeploymentId>,
}

impl FollowArgs {
    fn options(&self, signing: &SigningArgs) -> PushOptions {
        PushOptions {
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            expect: self.expect.map(|n| n as usize),
            id: self.id.clone(),
            valid_for: signing.valid_for(),
            ..PushOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Serve the new version to PERCENT of the bundle's requests first; it is promoted at
    /// the end of the window, or rolled back as soon as it breaks a threshold.
    #[arg(long, value_name = "PERCENT")]
    pub canary: Option<f64>,
    /// How long the canary runs, in whole seconds, e.g. 60s, 5m [default: 60s].
    #[arg(long, value_name = "DURATION", requires = "canary", value_parser = parse_whole_seconds)]
    pub canary_window: Option<u64>,
    /// The canary's largest share of failed requests, 0 to 1 [default: 0.01].
    #[arg(long, value_name = "RATE", requires = "canary")]
    pub max_error_rate: Option<f64>,
    /// The canary's largest p99 latency in milliseconds [default: 100].
    #[arg(long, value_name = "MS", requires = "canary")]
    pub max_p99_ms: Option<f64>,
    /// Requests the canary must have seen before it is judged [default: 0].
    #[arg(long, value_name = "N", requires = "canary")]
    pub min_requests: Option<u64>,
    /// Judge the canary on live accuracy too: roll it back when its error over the window
    /// (MAPE, or 1 - accuracy) exceeds RATIO times the active version's (e.g. 1.1).
    #[arg(long, value_name = "RATIO", requires = "canary")]
    pub max_accuracy_ratio: Option<f64>,
    /// Outcomes of the canary's predictions needed before its accuracy is judged, and
    /// for promotion [default: 20; with --max-accuracy-ratio].
    #[arg(long, value_name = "N", requires = "max_accuracy_ratio")]
    pub min_outcomes: Option<u64>,
}

impl CanaryArgs {
    fn policy(&self) -> Option<CanaryPolicy> {
        let defaults = CanaryPolicy::with_share(self.canary?);
        Some(CanaryPolicy {
            window_secs: self.canary_window.unwrap_or(defaults.window_secs),
            max_error_rate: self.max_error_rate.unwrap_or(defaults.max_error_rate),
            max_p99_ms: self.max_p99_ms.unwrap_or(defaults.max_p99_ms),
            min_requests: self.min_requests.unwrap_or(defaults.min_requests),
            accuracy: self.max_accuracy_ratio.map(|max_error_ratio| {
                let gate = AccuracyGate::default();
                AccuracyGate { max_error_ratio, min_outcomes: self.min_outcomes.unwrap_or(gate.min_outcomes) }
            }),
            ..defaults
        })
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The bundle file, e.g. car-price-1.3.0.fcb (`forecourt bundle pack`); at most 64 MiB.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub canary: CanaryArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The bundle's name, e.g. car-price.
    #[arg(long, value_name = "NAME", value_parser = parse_bundle_name)]
    pub bundle: BundleName,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The bundle's name, e.g. car-price.
    #[arg(long, value_name = "NAME", value_parser = parse_bundle_name)]
    pub bundle: BundleName,
    /// The version to remove; it must not be the active one.
    #[arg(long, value_name = "V")]
    pub version: semver::Version,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub signing: SigningArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The first level of every topic: the appliances' mqtt.topic_prefix.
    #[arg(long, default_value = "forecourt")]
    pub prefix: String,
    #[command(flatten)]
    pub signing: SigningArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Print the statuses as JSON (device -> status) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// One appliance, by its device id [default: every device].
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// Print the histories as JSON (device -> history) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: FleetCommand) -> anyhow::Result<()> {
    match command {
        FleetCommand::Push(args) => {
            // Read before connecting: a wrong file should fail before the broker is bothered.
            let bundle = BundleFile::read(&args.bundle)?;
            block_on(push(args, bundle))
        }
        FleetCommand::Rollback(args) => block_on(rollback(args)),
        FleetCommand::Remove(args) => block_on(remove(args)),
        FleetCommand::Status(args) => block_on(status(args)),
        FleetCommand::History(args) => block_on(history(args)),
        FleetCommand::Sign(args) => sign(args),
    }
}

/// The largest request `fleet sign` reads: a 64 MiB bundle in base64 and its JSON.
const MAX_SIGNED_INPUT: u64 = 128 << 20;

fn sign(args: SignArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let key = args.signing.key()?;
    let target = args.target.target();
    target.check()?;
    let mut input = Vec::new();
    std::io::stdin().take(MAX_SIGNED_INPUT + 1).read_to_end(&mut input)?;
    anyhow::ensure!(input.len() as u64 <= MAX_SIGNED_INPUT, "the request on stdin is over {MAX_SIGNED_INPUT} bytes");
    // Any JSON is signed as it is: the appliance checks the request's fields itself.
    let request: serde_json::Value =
        serde_json::from_slice(&input).map_err(|error| anyhow::anyhow!("the request on stdin is not JSON: {error}"))?;
    let topic = target.topic(&Topics::new(&args.prefix));
    let not_after = signed::unix_now() + args.signing.valid_for().as_secs();
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&signed::seal(&request, &topic, not_after, &key))?;
    stdout.write_all(b"\n")?;
    Ok(())
}

/// One thread is plenty for one MQTT session, and leaves the appliance's cores alone when
/// a manager runs this on the box itself.
fn block_on(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(command)
}

async fn push(args: PushArgs, bundle: BundleFile) -> anyhow::Result<()> {
    eprintln!("pushing {} {} ({} bytes, sha256 {})", bundle.name, bundle.version, bundle.size, &bundle.sha256[..12]);
    let key = args.signing.key()?;
    let mut manager = args.broker.connect().await?;
    let policy = args.canary.policy();
    let mut options = args.follow.options(&args.signing);
    // A canary's outcome comes at the end of its window at the earliest.
    if let (Some(policy), None) = (&policy, args.follow.timeout) {
        options.timeout = Duration::from_secs(policy.window_secs) + DEFAULT_TIMEOUT;
    }
    let mut view = ProgressView::new();
    let outcomes =
        manager.deploy(&args.target.target(), &bundle, policy, &key, &options, |seen| view.observe(seen)).await;
    finish(manager, view, outcomes, options.expect).await
}

async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let key = args.signing.key()?;
    let mut manager = args.broker.connect().await?;
    let options = args.follow.options(&args.signing);
    let mut view = ProgressView::new();
    let target = args.target.target();
    let outcomes = manager.rollback(&target, &args.bundle, &key, &options, |seen| view.observe(seen)).await;
    finish(manager, view, outcomes, options.expect).await
}

async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let key = args.signing.key()?;
    let mut manager = args.broker.connect().await?;
    let options = args.follow.options(&args.signing);
    let mut view = ProgressView::new();
    let target = args.target.target();
    let outcomes =
        manager.remove(&target, &args.bundle, &args.version, &key, &options, |seen| view.observe(seen)).await;
    finish(manager, view, outcomes, options.expect).await
}

/// Prints the outcomes and turns failures into the command's error.
async fn finish(
    manager: FleetManager,
    mut view: ProgressView,
    outcomes: Result<Vec<DeviceOutcome>, ManagerError>,
    expect: Option<usize>,
) -> anyhow::Result<()> {
    view.finish();
    manager.disconnect().await;
    let outcomes = outcomes.map_err(with_hint)?;
    if !outcomes.is_empty() {
        println!("{}", outcome_table(&outcomes));
    }
    match summary(&outcomes, expect) {
        Ok(line) => {
            eprintln!("{line}");
            Ok(())
        }
        Err(line) => anyhow::bail!(line),
    }
}

fn with_hint(error: ManagerError) -> anyhow::Error {
    match error {
        ManagerError::EmptyGroup { .. } => anyhow::anyhow!(
            "{error}; nothing was published (with --expect N the request goes out anyway and the command waits for N devices)"
        ),
        other => other.into(),
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let mut manager = args.broker.connect().await?;
    let statuses = manager.statuses(DEFAULT_SETTLE).await;
    manager.disconnect().await;
    let statuses = statuses?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else if statuses.is_empty() {
        eprintln!("no device has a status under {}/+/status", args.broker.prefix);
    } else {
        println!("{}", status_table(&statuses));
    }
    Ok(())
}

async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let mut manager = args.broker.connect().await?;
    let histories = manager.histories(args.device.as_deref(), DEFAULT_SETTLE).await;
    manager.disconnect().await;
    let histories = histories?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&histories)?);
    } else if histories.is_empty() {
        let whom = args.device.as_deref().map_or_else(|| "no device".to_owned(), |device| device.to_owned());
        eprintln!(
            "{whom} has a history under {}/{}/history (a device publishes one once its fleet link is up)",
            args.broker.prefix,
            args.device.as_deref().unwrap_or("+"),
        );
    } else {
        println!("{}", history_table(&histories));
    }
    Ok(())
}

fn parse_broker(url: &str) -> Result<BrokerAddress, String> {
    BrokerAddress::parse(url)
}

fn parse_id(id: &str) -> Result<DeploymentId, String> {
    DeploymentId::try_from(id)
}

fn parse_bundle_name(name: &str) -> Result<BundleName, String> {
    BundleName::try_from(name.to_owned())
}

/// `60s`, `2m`, `500ms`, `1h`, or a sum such as `1m30s`; above zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as 60s, 2m, 500ms or 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let letters = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let seconds_per = match &rest[..letters] {
            "ms" => None,
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "" => return Err(format!("{text:?} needs a unit: ms, s, m or h")),
            _ => return Err(invalid()),
        };
        rest = &rest[letters..];
        let part = match seconds_per {
            None => Some(Duration::from_millis(number)),
            Some(factor) => number.checked_mul(factor).map(Duration::from_secs),
        };
        total = part.and_then(|part| total.checked_add(part)).ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if total.is_zero() {
        return Err(format!("{text:?} must be above zero"));
    }
    Ok(total)
}

/// A duration in whole seconds (the canary window is counted in seconds on the wire).
pub fn parse_whole_seconds(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?} must be a whole number of seconds"));
    }
    Ok(duration.as_secs())
}

/// Live progress: a spinner line per device on a terminal, which turns into a bar filling
/// up over a canary's window. indicatif draws nothing when stderr is not one (CI, tests, a
/// pipe), so there each message is a plain line instead, with a line now and then while a
/// canary runs.
struct ProgressView {
    mode: Mode,
    /// The tasks that move each running canary's bar or print its lines.
    canaries: BTreeMap<String, tokio::task::JoinHandle<()>>,
}

enum Mode {
    Bars { multi: MultiProgress, bars: BTreeMap<String, ProgressBar>, width: usize },
    Lines,
}

impl std::fmt::Debug for ProgressView {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self.mode {
            Mode::Bars { .. } => "ProgressView::Bars",
            Mode::Lines => "ProgressView::Lines",
        })
    }
}

impl Drop for ProgressView {
    fn drop(&mut self) {
        for ticker in self.canaries.values() {
            ticker.abort();
        }
    }
}

impl ProgressView {
    fn new() -> Self {
        let mode = if std::io::stderr().is_terminal() {
            Mode::Bars { multi: MultiProgress::new(), bars: BTreeMap::new(), width: 0 }
        } else {
            Mode::Lines
        };
        Self { mode, canaries: BTreeMap::new() }
    }

    fn observe(&mut self, seen: Observation<'_>) {
        match seen {
            Observation::NotOnline { device, status } => self.say(&not_online_warning(device, status)),
            Observation::Publishing { deployment, topic, expected } => {
                self.say(&format!("deployment {deployment} on {topic}: {}", awaiting(expected)));
                if let Mode::Bars { width, .. } = &mut self.mode {
                    *width = expected.iter().map(String::len).max().unwrap_or(0);
                }
                for device in expected {
                    self.bar(device);
                }
            }
            Observation::Progress(progress) => {
                if let Some(ticker) = self.canaries.remove(&progress.device) {
                    ticker.abort();
                }
                match &self.mode {
                    Mode::Lines => eprintln!("{}", progress_line(progress)),
                    Mode::Bars { .. } => {
                        let bar = self.bar(&progress.device);
                        let message = progress_message(progress);
                        if progress.is_final {
                            let ok = classify(progress.action, Some(progress)) == Outcome::Succeeded;
                            let mark = if ok { "✓" } else { "✗" };
                            bar.set_style(style("{prefix} {msg}"));
                            bar.finish_with_message(format!("{mark} {message}"));
                        } else {
                            bar.set_message(message);
                        }
                    }
                }
                if let Some(window) = canary_window(progress) {
                    let ticker = self.follow_canary(&progress.device, window);
                    self.canaries.insert(progress.device.clone(), ticker);
                }
            }
        }
    }

    /// Shows a canary's window passing: the device's bar fills up over it, or a line is
    /// printed every quarter of it (at most every 10 s). The device's next message stops it.
    fn follow_canary(&mut self, device: &str, window: Duration) -> tokio::task::JoinHandle<()> {
        let started = tokio::time::Instant::now();
        let seconds = window.as_secs();
        match &self.mode {
            Mode::Bars { .. } => {
                let bar = self.bar(device);
                bar.set_length(seconds);
                bar.set_position(0);
                bar.set_style(style("{spinner} {prefix} {msg} [{bar:24}] {pos}/{len} s"));
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(Duration::from_millis(250));
                    while !bar.is_finished() {
                        ticks.tick().await;
                        bar.set_position(started.elapsed().as_secs().min(seconds));
                    }
                })
            }
            Mode::Lines => {
                let every = (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
                let device = device.to_owned();
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval_at(started + every, every);
                    loop {
                        ticks.tick().await;
                        let elapsed = started.elapsed().as_secs().min(seconds);
                        eprintln!("{device}  canary  {elapsed} s of {seconds} s");
                        if elapsed >= seconds {
                            return;
                        }
                    }
                })
            }
        }
    }

    /// The device's line, made on first sight (devices nobody expected get one too).
    fn bar(&mut self, device: &str) -> ProgressBar {
        let Mode::Bars { multi, bars, width } = &mut self.mode else { return ProgressBar::hidden() };
        bars.entry(device.to_owned())
            .or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style("{spinner} {prefix} {msg}"));
                bar.set_prefix(format!("{device:<width$}", width = *width));
                bar.set_message("waiting");
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone()
    }

    fn say(&self, line: &str) {
        match &self.mode {
            // Above the bars, so that they are not torn apart.
            Mode::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
            Mode::Lines => eprintln!("{line}"),
        }
    }

    /// Stops the spinners of devices that never ended, so that the table prints below them.
    fn finish(&mut self) {
        for (_, ticker) in std::mem::take(&mut self.canaries) {
            ticker.abort();
        }
        if let Mode::Bars { bars, .. } = &self.mode {
            for bar in bars.values().filter(|bar| !bar.is_finished()) {
                bar.set_style(style("{prefix} {msg}"));
                bar.abandon_with_message(format!("… no outcome ({})", bar.message()));
            }
        }
    }
}

/// The window of a canary that just started.
fn canary_window(progress: &Progress) -> Option<Duration> {
    canary_policy(progress).map(|policy| Duration::from_secs(policy.window_secs))
}

/// The policy a canary's start message carries.
fn canary_policy(progress: &Progress) -> Option<CanaryPolicy> {
    if progress.step != Step::Canary || progress.is_final {
        return None;
    }
    serde_json::from_value(progress.detail.clone()?).ok()
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn awaiting(expected: &BTreeSet<String>) -> String {
    match expected.len() {
        0 => "waiting for devices to answer".to_owned(),
        1 => "waiting for 1 device".to_owned(),
        n => format!("waiting for {n} devices"),
    }
}

fn not_online_warning(device: &str, status: Option<&Status>) -> String {
    let state = match status {
        Some(status) => format!("is offline (last up since {})", status.since),
        None => "has no status (never connected, or under another --prefix)".to_owned(),
    };
    format!("warning: {device} {state}; a persistent session may still deliver the request when it is back")
}

/// `kiosk-3  verified  car-price 1.3.0`, and the reason when there is one.
fn progress_line(progress: &Progress) -> String {
    format!("{}  {}", progress.device, progress_message(progress))
}

fn progress_message(progress: &Progress) -> String {
    let mut parts = vec![progress.step.as_str().to_owned()];
    let release = [progress.bundle.as_deref(), progress.version.as_deref()].into_iter().flatten().collect::<Vec<_>>();
    if !release.is_empty() {
        parts.push(release.join(" "));
    }
    if let Some(reason) = &progress.reason {
        parts.push(reason_text(reason));
    }
    if let Some(policy) = canary_policy(progress) {
        parts.push(format!("{}% of requests for {} s", policy.share_percent, policy.window_secs));
    }
    parts.join("  ")
}

fn reason_text(reason: &Reason) -> String {
    let code = serde_json::to_value(reason.code).ok().and_then(|code| code.as_str().map(str::to_owned));
    format!("{}: {}", code.unwrap_or_else(|| format!("{:?}", reason.code)), reason.message)
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(header.to_vec());
    // Wrapping to the terminal keeps long reasons readable; a terminal that reports no
    // usable width (a bare pty) would squeeze every cell to one character instead.
    if table.width().is_some_and(|width| width >= 60) {
        table.set_content_arrangement(ContentArrangement::Dynamic);
    }
    table
}

/// device, outcome, step, version, previous, seconds, reason.
fn outcome_table(outcomes: &[DeviceOutcome]) -> Table {
    let mut table = new_table(&["device", "outcome", "step", "version", "previous", "seconds", "reason"]);
    for outcome in outcomes {
        let last = outcome.last.as_ref();
        let text = |field: Option<&String>| field.cloned().unwrap_or_else(|| "-".to_owned());
        table.add_row(vec![
            outcome.device.clone(),
            outcome_label(outcome.outcome).to_owned(),
            last.map_or("-", |progress| progress.step.as_str()).to_owned(),
            text(last.and_then(|progress| progress.version.as_ref())),
            text(last.and_then(|progress| progress.previous.as_ref())),
            format!("{:.1}", outcome.elapsed.as_secs_f64()),
            last.and_then(|progress| progress.reason.as_ref()).map_or_else(String::new, reason_text),
        ]);
    }
    table
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "ok",
        Outcome::Failed => "failed",
        Outcome::TimedOut => "timed out",
    }
}

/// device, online, runtime, bundles, groups, since.
fn status_table(statuses: &BTreeMap<String, Status>) -> Table {
    let mut table = new_table(&["device", "online", "runtime", "bundles", "groups", "since"]);
    for (device, status) in statuses {
        table.add_row(vec![
            device.clone(),
            (if status.online { "yes" } else { "no" }).to_owned(),
            status.version.clone(),
            bundles_cell(status),
            status.groups.join(", "),
            status.since.clone(),
        ]);
    }
    table
}

/// device, deployment, action, bundle, version, previous, outcome, started, updated, reason;
/// newest first within each device.
fn history_table(histories: &BTreeMap<String, History>) -> Table {
    let mut table = new_table(&[
        "device",
        "deployment",
        "action",
        "bundle",
        "version",
        "previous",
        "outcome",
        "started",
        "updated",
        "reason",
    ]);
    for (device, history) in histories {
        for entry in &history.deployments {
            let text = |field: &Option<String>| field.clone().unwrap_or_else(|| "-".to_owned());
            let outcome = match entry.ok {
                Some(true) => format!("ok ({})", entry.step.as_str()),
                Some(false) => entry.step.as_str().to_owned(),
                None => format!("running ({})", entry.step.as_str()),
            };
            table.add_row(vec![
                device.clone(),
                entry.deployment.clone(),
                serde_json::to_value(entry.action).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
                text(&entry.bundle),
                text(&entry.version),
                text(&entry.previous),
                outcome,
                entry.started.clone(),
                entry.updated.clone(),
                entry.reason.as_ref().map_or_else(String::new, reason_text),
            ]);
        }
    }
    table
}

/// `car-price 1.2.0 (canary 1.3.0), iris 1.0.0`.
fn bundles_cell(status: &Status) -> String {
    let names: BTreeSet<&String> = status.bundles.keys().chain(status.canaries.keys()).collect();
    let describe = |name: &String| {
        let active = status.bundles.get(name).map(|version| format!(" {version}")).unwrap_or_default();
        let canary = status.canaries.get(name).map(|version| format!(" (canary {version})")).unwrap_or_default();
        format!("{name}{active}{canary}")
    };
    names.into_iter().map(describe).collect::<Vec<_>>().join(", ")
}

/// The closing line: `Ok` when every device succeeded, else the error's one-line summary.
fn summary(outcomes: &[DeviceOutcome], expect: Option<usize>) -> Result<String, String> {
    let total = outcomes.len();
    let missing = expect.unwrap_or(0).saturating_sub(total);
    if total == 0 {
        return Err(match expect {
            Some(expected) => format!("no device answered (expected {expected})"),
            None => "no device was targeted".to_owned(),
        });
    }
    let count = |kind: Outcome| outcomes.iter().filter(|outcome| outcome.outcome == kind).count();
    let (failed, timed_out) = (count(Outcome::Failed), count(Outcome::TimedOut));
    let devices = if total == 1 { "device" } else { "devices" };
    let mut problems = Vec::new();
    if failed > 0 {
        problems.push(format!("{failed} of {total} {devices} failed"));
    }
    if timed_out > 0 {
        let of = if problems.is_empty() { format!(" of {total} {devices}") } else { String::new() };
        problems.push(format!("{timed_out}{of} timed out"));
    }
    if missing > 0 {
        problems.push(format!("{missing} of the {} expected devices never answered", total + missing));
    }
    if problems.is_empty() { Ok(format!("{total} of {total} {devices} ok")) } else { Err(problems.join(", ")) }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use forecourt_protocol::fleet::messages::{Action, ReasonCode};

    /// The fleet commands under `forecourt fleet`, as the binary mounts them.
    #[derive(Debug, Parser)]
    #[command(name = "forecourt")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        #[command(subcommand)]
        Fleet(Box<FleetCommand>),
    }

    fn progress(device: &str, step: Step) -> Progress {
        Progress { ok: None, ..crate::manager::example_progress(device, Action::Deploy, step) }
    }

    fn outcome(device: &str, outcome: Outcome, last: Option<Progress>) -> DeviceOutcome {
        DeviceOutcome { device: device.to_owned(), outcome, last, elapsed: Duration::from_millis(2500) }
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "60", "5x", "s", "0s", "-1s", "1.5s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("60").unwrap_err().contains("unit"));
        assert_eq!(parse_whole_seconds("2m"), Ok(120));
        assert!(parse_whole_seconds("1500ms").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn parse(line: &str) -> Result<FleetCommand, clap::Error> {
        let cli = Cli::try_parse_from(format!("forecourt fleet {line}").split_whitespace())?;
        let Command::Fleet(command) = cli.command;
        Ok(*command)
    }

    #[test]
    fn push_takes_a_target_and_a_canary_policy() {
        let line = "push --broker mqtt://b:1884 --bundle c.fcb --key k.key --group east --canary 10 --canary-window 2m \
                    --max-p99-ms 50 --timeout 90s --expect 3";
        let FleetCommand::Push(args) = parse(line).unwrap() else { panic!() };
        assert_eq!(args.broker.broker, BrokerAddress { host: "b".to_owned(), port: 1884, tls: None });
        assert_eq!(args.broker.prefix, "forecourt");
        assert_eq!(args.target.target(), Target::Group("east".to_owned()));
        let policy = args.canary.policy().unwrap();
        assert_eq!((policy.share_percent, policy.window_secs, policy.max_p99_ms), (10.0, 120, 50.0));
        assert_eq!(policy.max_error_rate, CanaryPolicy::with_share(10.0).max_error_rate);
        let options = args.follow.options(&args.signing);
        assert_eq!((options.timeout, options.expect), (Duration::from_secs(90), Some(3)));

        let FleetCommand::Push(args) = parse("push --broker mqtt://b --bundle c.fcb --key k.key --device k1").unwrap()
        else {
            panic!()
        };
        assert_eq!(args.canary.policy(), None);
        assert_eq!(args.follow.options(&args.signing).timeout, Duration::from_secs(60));

        for bad in [
            "push --broker mqtt://b --bundle c.fcb --key k.key",
            "push --broker mqtt://b --bundle c.fcb --key k.key --device k1 --group east",
            "push --broker mqtt://b --bundle c.fcb --key k.key --device k1 --expect 2",
            "push --broker mqtt://b --bundle c.fcb --key k.key --group east --expect 0",
            "push --broker mqtt://b --bundle c.fcb --key k.key --device k1 --max-p99-ms 50",
            "push --broker http://b --bundle c.fcb --key k.key --device k1",
            "push --broker mqtt://b --bundle c.fcb --key k.key --device k1 --timeout 60",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn rollback_remove_and_status_parse() {
        let FleetCommand::Remove(args) =
            parse("remove --broker mqtt://b --bundle car-price --key k.key --version 1.2.0 --device k1").unwrap()
        else {
            panic!()
        };
        assert_eq!((args.bundle.as_str(), args.version.to_string()), ("car-price", "1.2.0".to_owned()));
        assert!(parse("remove --broker mqtt://b --bundle car-price --key k.key --version one --device k1").is_err());
        assert!(
            parse("remove --broker mqtt://b --bundle car-price --version 1.2.0 --device k1").is_err(),
            "--key is required"
        );
        assert!(parse("rollback --broker mqtt://b --bundle ../x --key k.key --device k1").is_err());
        assert!(parse("rollback --broker mqtt://b --bundle car-price --key k.key --device k1 --id ..").is_err());
        let FleetCommand::Rollback(args) = parse(
            "rollback --broker mqtt://b --bundle car-price --key k.key --device k1 --valid-for 10m --username fleet",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(args.follow.options(&args.signing).valid_for, Duration::from_secs(600));
        assert_eq!(args.broker.username.as_deref(), Some("fleet"));
        assert!(parse("status --broker mqtt://b --password-file p").is_err(), "a password file needs a user name");
        assert!(matches!(
            parse("rollback --broker mqtt://b --bundle car-price --key k.key --group east --prefix fc").unwrap(),
            FleetCommand::Rollback(RollbackArgs { broker: BrokerArgs { ref prefix, .. }, .. }) if prefix == "fc"
        ));
        assert!(matches!(
            parse("status --broker mqtt://b --json").unwrap(),
            FleetCommand::Status(StatusArgs { json: true, .. })
        ));
    }

    #[test]
    fn progress_lines_name_the_device_step_and_release() {
        assert_eq!(progress_line(&progress("kiosk-3", Step::Verified)), "kiosk-3  verified  car-price 1.3.0");
        let mut rejected = progress("kiosk-4", Step::Rejected);
        rejected.reason = Some(Reason::new(ReasonCode::Untrusted, "signed by an unknown key"));
        assert_eq!(progress_line(&rejected), "kiosk-4  rejected  car-price 1.3.0  untrusted: signed by an unknown key");
    }

    #[test]
    fn the_outcome_table_has_a_row_per_device() {
        let mut active = progress("kiosk-1", Step::Active);
        active.previous = Some("1.2.0".to_owned());
        let mut rejected = progress("kiosk-2", Step::Rejected);
        rejected.reason = Some(Reason::new(ReasonCode::SmokeTestFailed, "sample 2: price 3.0, expected 4.0"));
        let table = outcome_table(&[
            outcome("kiosk-1", Outcome::Succeeded, Some(active)),
            outcome("kiosk-2", Outcome::Failed, Some(rejected)),
            outcome("kiosk-3", Outcome::TimedOut, None),
        ])
        .to_string();
        let row = |device: &str| table.lines().find(|line| line.contains(device)).unwrap().to_owned();
        for cell in ["kiosk-1", "ok", "active", "1.3.0", "1.2.0", "2.5"] {
            assert!(row("kiosk-1").contains(cell), "{cell} missing in\n{table}");
        }
        for cell in ["failed", "rejected", "smoke_test_failed: sample 2"] {
            assert!(row("kiosk-2").contains(cell), "{cell} missing in\n{table}");
        }
        assert!(row("kiosk-3").contains("timed out"), "{table}");
        assert!(table.lines().next().is_some_and(|line| line.contains("─")), "{table}");
        for header in ["device", "outcome", "step", "version", "previous", "seconds", "reason"] {
            assert!(table.contains(header), "{header} missing in\n{table}");
        }
    }

    #[test]
    fn the_status_table_marks_canaries_and_offline_devices() {
        let status = Status {
            online: false,
            version: "0.1.0".to_owned(),
            bundles: BTreeMap::from([
                ("car-price".to_owned(), "1.2.0".to_owned()),
                ("iris".to_owned(), "1.0.0".to_owned()),
            ]),
            since: "2026-01-01T00:00:00Z".to_owned(),
            groups: vec!["east".to_owned(), "beta".to_owned()],
            canaries: BTreeMap::from([("car-price".to_owned(), "1.3.0".to_owned())]),
        };
        assert_eq!(bundles_cell(&status), "car-price 1.2.0 (canary 1.3.0), iris 1.0.0");
        let table = status_table(&BTreeMap::from([("kiosk-9".to_owned(), status)])).to_string();
        let row = table.lines().find(|line| line.contains("kiosk-9")).unwrap();
        for cell in ["no", "0.1.0", "car-price 1.2.0 (canary 1.3.0), iris 1.0.0", "east, beta", "2026-01-01T00:00:00Z"]
        {
            assert!(row.contains(cell), "{cell} missing in\n{table}");
        }
    }

    #[test]
    fn a_canary_start_names_its_share_and_window() {
        let mut canary = progress("kiosk-1", Step::Canary);
        assert_eq!(canary_window(&canary), None, "no policy, no window");
        let policy = CanaryPolicy { window_secs: 90, ..CanaryPolicy::with_share(10.0) };
        canary.detail = Some(serde_json::to_value(&policy).unwrap());
        assert_eq!(canary_window(&canary), Some(Duration::from_secs(90)));
        assert_eq!(progress_line(&canary), "kiosk-1  canary  car-price 1.3.0  10% of requests for 90 s");
        let promoted = Progress { step: Step::Active, is_final: true, ..canary };
        assert_eq!(canary_window(&promoted), None);
    }

    #[test]
    fn the_history_table_shows_each_deployment_with_its_outcome() {
        use forecourt_protocol::fleet::messages::HistoryEntry;
        let entry = |deployment: &str, step: Step, ok: Option<bool>, reason: Option<Reason>| HistoryEntry {
            deployment: deployment.to_owned(),
            action: Action::Deploy,
            step,
            bundle: Some("car-price".to_owned()),
            version: Some("1.3.0".to_owned()),
            previous: Some("1.2.0".to_owned()),
            started: "2026-01-01T00:00:00.000Z".to_owned(),
            updated: "2026-01-01T00:00:02.500Z".to_owned(),
            ok,
            reason,
        };
        let history = History {
            device: "kiosk-9".to_owned(),
            time: "2026-01-01T00:01:00.000Z".to_owned(),
            deployments: vec![
                entry("d3", Step::Canary, None, None),
                entry("d2", Step::Rejected, Some(false), Some(Reason::new(ReasonCode::Untrusted, "unsigned"))),
                entry("d1", Step::Active, Some(true), None),
            ],
        };
        let table = history_table(&BTreeMap::from([("kiosk-9".to_owned(), history)])).to_string();
        let row = |deployment: &str| table.lines().find(|line| line.contains(&format!(" {deployment} "))).unwrap();
        assert!(row("d3").contains("running (canary)"), "{table}");
        assert!(row("d2").contains("rejected") && row("d2").contains("untrusted: unsigned"), "{table}");
        for cell in ["kiosk-9", "deploy", "car-price", "1.3.0", "1.2.0", "ok (active)", "2026-01-01T00:00:02.500Z"] {
            assert!(row("d1").contains(cell), "{cell} missing in\n{table}");
        }
        let order: Vec<usize> = ["d3", "d2", "d1"].iter().map(|d| table.find(&format!(" {d} ")).unwrap()).collect();
        assert!(order.is_sorted(), "newest first, as the device sent them:\n{table}");
    }

    #[test]
    fn the_summary_counts_failures_timeouts_and_missing_devices() {
        let ok = |device: &str| outcome(device, Outcome::Succeeded, None);
        let mut fleet: Vec<_> = (0..18).map(|n| ok(&format!("k{n}"))).collect();
        assert_eq!(summary(&fleet, None), Ok("18 of 18 devices ok".to_owned()));
        assert_eq!(summary(&fleet[..1], None), Ok("1 of 1 device ok".to_owned()));
        fleet.push(outcome("k18", Outcome::Failed, None));
        fleet.push(outcome("k19", Outcome::Failed, None));
        assert_eq!(summary(&fleet, None), Err("2 of 20 devices failed".to_owned()));
        fleet.push(outcome("k20", Outcome::TimedOut, None));
        assert_eq!(summary(&fleet, None), Err("2 of 21 devices failed, 1 timed out".to_owned()));
        assert_eq!(
            summary(&fleet[..19], Some(20)),
            Err("1 of 19 devices failed, 1 of the 20 expected devices never answered".to_owned())
        );
        assert_eq!(summary(&[outcome("k", Outcome::TimedOut, None)], None), Err("1 of 1 device timed out".to_owned()));
        assert_eq!(summary(&[], None), Err("no device was targeted".to_owned()));
        assert_eq!(summary(&[], Some(3)), Err("no device answered (expected 3)".to_owned()));
    }

    #[test]
    fn warnings_say_why_a_device_may_not_answer() {
        assert!(not_online_warning("k1", None).contains("has no status"));
        let status = Status {
            online: false,
            version: "0.1.0".to_owned(),
            bundles: BTreeMap::new(),
            since: "2026-01-01T00:00:00Z".to_owned(),
            groups: Vec::new(),
            canaries: BTreeMap::new(),
        };
        assert!(not_online_warning("k1", Some(&status)).contains("is offline"));
    }
}
