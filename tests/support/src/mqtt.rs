//! A real Mosquitto broker for end-to-end tests of the appliance's MQTT fleet link: the
//! broker process ([`Broker`]: a free port on 127.0.0.1, a private configuration, readiness
//! awaited by polling a TCP connect, its log kept in a file and printed when a test fails,
//! killed on drop), stopping and restarting it on the same port for the store-and-forward
//! tests, publishing through the real `mosquitto_pub` client, and a test subscriber
//! ([`Subscription`], built on rumqttc) that records everything it receives and survives
//! broker restarts.
//!
//! What the broker can and cannot keep across an outage:
//! - a subscriber that is offline while the broker stays up keeps its session (it connects
//!   with `clean_session = false` and a fixed client id), so Mosquitto queues the QoS 1
//!   messages published meanwhile and delivers them when it reconnects;
//! - the broker keeps its state on disk (`persistence true`, saved when [`Broker::stop`]
//!   stops it with SIGTERM), as production brokers do: sessions, their subscriptions and
//!   queued QoS 1 messages, and retained messages survive a restart, so a subscriber misses
//!   nothing a client publishes after the restart, however quickly it reconnects;
//! - a message published while the broker itself is down reaches nobody: there is no broker
//!   to hold it. Only the publisher (the appliance's store-and-forward queue) can keep it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode};

use crate::temp_dir;
use crate::tools::{ensure_apt, on_path};

/// The only address the broker listens on.
const HOST: &str = "127.0.0.1";
/// How long the broker may take to accept connections, or to stop accepting them.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restart keeps retrying while the old port is still taken.
const BIND_RETRY: Duration = Duration::from_secs(5);
/// How long a subscriber may take to get its SUBACK (after connecting or reconnecting).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness, exits and port states are polled.
const POLL: Duration = Duration::from_millis(20);
/// The pause between a subscriber's reconnection attempts: rumqttc reconnects on the very
/// next poll, so without it a subscriber would spin on "connection refused" while the
/// broker is down.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// The largest packet MQTT can express (its remaining length is at most 268,435,455 bytes),
/// for the broker and the subscriber alike: a deployment request carries its bundle inline,
/// base64-encoded, so a 100 MiB bundle makes a ~134 MiB packet.
const MAX_PACKET: usize = 268_435_455;

/// Client ids unique within the test process (the pid and the port make them unique across
/// processes and brokers), so no two subscribers ever share, or take over, a session.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A running Mosquitto broker on 127.0.0.1 with a private configuration; killed (and reaped)
/// when dropped, its log printed if the test is failing.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    /// Holds mosquitto.conf and one log file per run.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How many times the process was started (1 + restarts + failed binds).
    runs: usize,
    /// The subscriptions made through [`Broker::subscribe`], so a restart can wait for them.
    links: Mutex<Vec<Weak<Link>>>,
    /// Each live subscription's connection count when the broker was last stopped.
    stopped: Vec<(Weak<Link>, u64)>,
    /// The TLS listener's port, when the broker has one ([`Broker::start_with_tls`]).
    tls_port: Option<u16>,
    /// Users, passwords and an ACL, when the broker takes no anonymous clients
    /// ([`Broker::start_locked_down`]).
    auth: Option<Auth>,
}

/// A locked-down broker's users and ACL. The harness's own clients ([`Broker::subscribe`],
/// [`Broker::publish`]) connect as `admin`.
#[derive(Debug, Clone)]
struct Auth {
    admin: User,
    acl: String,
}

/// An MQTT user name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl User {
    pub fn new(name: &str, password: &str) -> Self {
        Self { name: name.to_owned(), password: password.to_owned() }
    }
}

impl Broker {
    /// Installs Mosquitto and its clients if needed, starts a broker on a free port and
    /// waits until it accepts TCP connections.
    pub fn start() -> Broker {
        Self::launch(false, None, &[])
    }

    /// [`Broker::start`], with a second listener over TLS ([`Broker::tls_url`]) whose
    /// certificate (for 127.0.0.1) a private CA ([`Broker::ca_file`]) signed, both made with
    /// the `openssl` command line.
    pub fn start_with_tls() -> Broker {
        Self::launch(true, None, &[])
    }

    /// [`Broker::start`] as a production broker is set up: no anonymous clients, each user
    /// with a password (`mosquitto_passwd`), and `acl` (the text of a Mosquitto ACL file)
    /// deciding who reads and writes which topics. The harness's own clients connect as
    /// `admin`, which must be one of `users`.
    pub fn start_locked_down(acl: &str, users: &[User], admin: &User) -> Broker {
        assert!(users.contains(admin), "the admin is one of the users");
        let auth = Auth { admin: admin.clone(), acl: acl.to_owned() };
        Self::launch(false, Some(auth), users)
    }

    fn launch(tls: bool, auth: Option<Auth>, users: &[User]) -> Broker {
        let dir = temp_dir();
        let mut broker = Broker {
            port: 0,
            dir,
            child: None,
            runs: 0,
            links: Mutex::new(Vec::new()),
            stopped: Vec::new(),
            tls_port: None,
            auth,
        };
        if tls {
            broker.make_certificates();
        }
        if broker.auth.is_some() {
            broker.write_users(users);
        }
        // A free port can be taken by another process between our probe and mosquitto's bind:
        // then another port will do.
        for _ in 0..5 {
            broker.port = free_port();
            broker.tls_port = tls.then(free_port);
            broker.write_config();
            match broker.try_launch() {
                Ok(child) => {
                    broker.child = Some(child);
                    return broker;
                }
                Err(Failure::AddressInUse) => continue,
                Err(Failure::Other(message)) => panic!("{message}"),
            }
        }
        panic!("mosquitto found no free port; its last log follows:\n{}", broker.run_log(broker.runs))
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://{HOST}:{}", self.port)
    }

    /// `mqtts://127.0.0.1:PORT`, the TLS listener of [`Broker::start_with_tls`].
    pub fn tls_url(&self) -> String {
        format!("mqtts://{HOST}:{}", self.tls_port.expect("the broker was started with TLS"))
    }

    /// The private CA's certificate (PEM) the TLS listener's certificate chains to.
    pub fn ca_file(&self) -> PathBuf {
        self.tls_dir().join("ca.pem")
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// A CA, and a certificate for 127.0.0.1 it signs, readable by the `mosquitto` user.
    fn make_certificates(&self) {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.tls_dir();
        std::fs::create_dir_all(&dir).expect("the tls folder can be made");
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("writable");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=forecourt test CA"],
            ]
            .concat(),
            [&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        ];
        for args in steps {
            let output = Command::new("openssl").args(&args).current_dir(&dir).output().expect("openssl runs");
            assert!(output.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
        }
        for entry in std::fs::read_dir(&dir).expect("readable") {
            let path = entry.expect("readable").path();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod works");
        }
        for path in [self.dir.path().to_path_buf(), dir] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod works");
        }
    }

    /// `127.0.0.1`.
    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration file the broker runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Mosquitto's log (connections, subscriptions, errors) of every run so far, oldest first.
    pub fn log(&self) -> String {
        (1..=self.runs).map(|run| format!("----- mosquitto run {run} -----\n{}", self.run_log(run))).collect()
    }

    /// Stops the broker with SIGTERM (it saves its sessions and retained messages; clients
    /// just lose the connection), reaps it, and waits until its port refuses connections.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let terminated = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        if !terminated.is_ok_and(|status| status.success()) {
            let _ = child.kill();
        }
        let _ = child.wait();
        // No connection can be acknowledged by the dead broker any more: the counts taken
        // now tell [`Broker::restart`] which acknowledgements come from the new one.
        self.stopped =
            self.live_links().into_iter().map(|link| (Arc::downgrade(&link), link.lock().connections)).collect();
        let deadline = Instant::now() + START_TIMEOUT;
        while accepts(self.port) {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections after mosquitto was killed",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    /// Starts the broker again on the same port (stopping it first if it runs), waits until it
    /// accepts connections, and then until every live [`Subscription`] made before the stop has
    /// reconnected and subscribed again, so no message published after this returns is missed.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + BIND_RETRY;
        let child = loop {
            match self.try_launch() {
                Ok(child) => break child,
                // The port may be briefly unavailable after the old process died (or be taken
                // by someone else meanwhile); there is no event to await, so retry shortly.
                Err(Failure::AddressInUse) if Instant::now() < deadline => std::thread::sleep(POLL * 5),
                Err(Failure::AddressInUse) => {
                    panic!("port {} stayed in use for {BIND_RETRY:?}:\n{}", self.port, self.run_log(self.runs))
                }
                Err(Failure::Other(message)) => panic!("{message}"),
            }
        };
        self.child = Some(child);
        for (link, connections) in std::mem::take(&mut self.stopped) {
            let Some(link) = link.upgrade() else { continue };
            let state = link.wait(SUBSCRIBE_TIMEOUT, |state| {
                state.refused.is_some() || (state.connections > connections && state.subscribed)
            });
            assert!(
                state.refused.is_none() && state.subscribed && state.connections > connections,
                "subscriber {} did not subscribe again to {:?} within {SUBSCRIBE_TIMEOUT:?} of the restart: {state:?}",
                link.client_id,
                link.filter
            );
        }
    }

    /// A subscriber to `filter` (wildcards allowed, e.g. `forecourt/+/status`) at QoS 1.
    /// Returns once the broker has acknowledged the subscription, so every message published
    /// after this returns is received. Panics if the broker refuses it or does not answer
    /// (it must be running).
    pub fn subscribe(&self, filter: &str) -> Subscription {
        let admin = self.auth.as_ref().map(|auth| &auth.admin);
        self.try_subscribe(filter, admin)
            .unwrap_or_else(|refused| panic!("the broker on port {} refused {filter:?}: {refused}", self.port))
    }

    /// A subscriber to `filter` connected as `user`; `Err` with the SUBACK's codes when the
    /// broker refuses the subscription.
    pub fn subscribe_as(&self, user: &User, filter: &str) -> Result<Subscription, String> {
        self.try_subscribe(filter, Some(user))
    }

    fn try_subscribe(&self, filter: &str, user: Option<&User>) -> Result<Subscription, String> {
        let subscription = Subscription::connect(self.port, filter, user)?;
        let mut links = self.links.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        links.retain(|link| link.strong_count() > 0);
        links.push(Arc::downgrade(&subscription.link));
        Ok(subscription)
    }

    /// [`Broker::publish`] as `user` (not retained). Mosquitto acknowledges a publish the
    /// ACL denies like any other (MQTT 3.1.1 has no way to say no) and drops it.
    pub fn publish_as(&self, user: &User, topic: &str, payload: &[u8]) {
        self.mosquitto_pub_as(Some(user), &["-t", topic, "-q", "1", "-s"], payload);
    }

    /// Publishes `payload` to `topic` at QoS 1 with the real `mosquitto_pub` client (the
    /// payload on its stdin, so any size works); returns once the broker acknowledged it.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let mut args = vec!["-t", topic, "-q", "1", "-s"];
        if retain {
            args.push("-r");
        }
        self.mosquitto_pub(&args, payload);
    }

    /// Removes the retained message of `topic` (a retained empty message).
    pub fn clear_retained(&self, topic: &str) {
        self.mosquitto_pub(&["-t", topic, "-q", "1", "-r", "-n"], &[]);
    }

    fn mosquitto_pub(&self, args: &[&str], stdin: &[u8]) {
        self.mosquitto_pub_as(self.auth.as_ref().map(|auth| &auth.admin), args, stdin);
    }

    fn mosquitto_pub_as(&self, user: Option<&User>, args: &[&str], stdin: &[u8]) {
        let credentials = user.map(|user| ["-u", &user.name, "-P", &user.password]);
        let mut child = Command::new("mosquitto_pub")
            .args(["-h", HOST, "-p", &self.port.to_string()])
            .args(credentials.iter().flatten())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_pub starts");
        // mosquitto_pub reads all of stdin before it connects, so writing everything first
        // cannot deadlock on its (small) output. A write error means it exited early: its
        // status and stderr below say why.
        let _ = child.stdin.take().expect("stdin is piped").write_all(stdin);
        let output = child.wait_with_output().expect("mosquitto_pub runs");
        assert!(
            output.status.success(),
            "mosquitto_pub {args:?} ({} payload bytes) to port {} failed with {}:\n{}{}",
            stdin.len(),
            self.port,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Where mosquitto keeps its database. Started as root, mosquitto runs as the
    /// `mosquitto` user, so the folder (and the way to it) must be open to it.
    fn persistence_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("persistence");
        if !dir.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&dir).expect("the persistence folder can be made");
            let open = |path: &std::path::Path, mode| {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod works")
            };
            open(self.dir.path(), 0o755);
            open(&dir, 0o777);
        }
        dir
    }

    fn write_config(&self) {
        // `log_dest stderr` goes to a file the harness opened: when started as root, Mosquitto
        // drops privileges to the `mosquitto` user and could not open a file in our private
        // temporary folder itself.
        let config = format!(
            "# Written by forecourt-testkit (tests/support/src/mqtt.rs) for one test broker.\n\
             listener {port} {HOST}\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {persistence}/\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_type subscribe\n\
             log_type unsubscribe\n\
             connection_messages true\n\
             log_timestamp_format %H:%M:%S\n\
             # Deployment requests carry whole bundles: allow the largest packet MQTT has.\n\
             # (Mosquitto 2 recommends this over the older message_size_limit.)\n\
             max_packet_size {MAX_PACKET}\n\
             # A subscriber that is offline while the broker runs must lose nothing.\n\
             max_queued_messages 100000\n",
            port = self.port,
            persistence = self.persistence_dir().display(),
        );
        let tls = self.tls_port.map(|port| {
            let dir = self.tls_dir();
            format!(
                "listener {port} {HOST}\ncafile {}\ncertfile {}\nkeyfile {}\n",
                dir.join("ca.pem").display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            )
        });
        let auth = self.auth.as_ref().map(|_| {
            format!(
                "allow_anonymous false\npassword_file {}\nacl_file {}\n",
                self.dir.path().join("passwd").display(),
                self.dir.path().join("acl").display()
            )
        });
        // Mosquitto takes the last `allow_anonymous` of a listener's settings.
        let config = config + &tls.unwrap_or_default() + &auth.unwrap_or_default();
        std::fs::write(self.config_path(), config).expect("the configuration can be written");
    }

    /// The password file (made with the real `mosquitto_passwd`) and the ACL file, readable
    /// by the `mosquitto` user the broker drops to.
    fn write_users(&self, users: &[User]) {
        use std::os::unix::fs::PermissionsExt;
        let auth = self.auth.as_ref().expect("a locked-down broker");
        // mosquitto_passwd comes with the broker's package.
        mosquitto_binary();
        let passwd = self.dir.path().join("passwd");
        for (index, user) in users.iter().enumerate() {
            let create: &[&str] = if index == 0 { &["-c"] } else { &[] };
            let status = Command::new("mosquitto_passwd")
                .args(create)
                .arg("-b")
                .arg(&passwd)
                .args([&user.name, &user.password])
                .stdout(Stdio::null())
                .status()
                .expect("mosquitto_passwd runs");
            assert!(status.success(), "mosquitto_passwd failed for {}", user.name);
        }
        let acl = self.dir.path().join("acl");
        std::fs::write(&acl, &auth.acl).expect("the ACL can be written");
        for file in [&passwd, &acl] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).expect("chmod works");
        }
    }

    /// Starts one mosquitto process and waits until it accepts connections.
    fn try_launch(&mut self) -> Result<Child, Failure> {
        self.runs += 1;
        let log = File::create(self.log_path(self.runs)).expect("the log file can be made");
        let mut child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file can be shared"))
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("mosquitto can be waited for") {
                return Err(self.failure(status));
            }
            // Accepting is not enough: the port could be someone else's while mosquitto is
            // still finding out it cannot bind it.
            if accepts(self.port) && child.try_wait().expect("mosquitto can be waited for").is_none() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Other(format!(
                    "mosquitto did not accept connections on port {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.port,
                    self.run_log(self.runs)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn failure(&self, status: ExitStatus) -> Failure {
        let log = self.run_log(self.runs);
        if log.contains("Address already in use") {
            Failure::AddressInUse
        } else {
            Failure::Other(format!(
                "mosquitto -c {} exited with {status} before accepting connections; its log:\n{log}",
                self.config_path().display()
            ))
        }
    }

    fn live_links(&self) -> Vec<Arc<Link>> {
        self.links.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().filter_map(Weak::upgrade).collect()
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("mosquitto-{run}.log"))
    }

    fn run_log(&self, run: usize) -> String {
        std::fs::read_to_string(self.log_path(run)).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("===== mosquitto log =====\n{}", self.log());
        }
    }
}

/// Why a broker process did not come up.
enum Failure {
    /// The port was taken (by another process, or not yet released).
    AddressInUse,
    /// Anything else, described with the broker's log.
    Other(String),
}

/// The broker program: Debian installs it in /usr/sbin, which is not on a normal user's PATH
/// (it is on root's), so it is looked for there too. The clients come from `mosquitto-clients`.
fn mosquitto_binary() -> &'static str {
    const DEBIAN_MOSQUITTO: &str = "/usr/sbin/mosquitto";
    static BINARY: OnceLock<&'static str> = OnceLock::new();
    BINARY.get_or_init(|| {
        ensure_apt("mosquitto-clients", "mosquitto_pub");
        if on_path("mosquitto") {
            return "mosquitto";
        }
        // `which` accepts a path, so this checks the very file the package installs.
        ensure_apt("mosquitto", DEBIAN_MOSQUITTO);
        DEBIAN_MOSQUITTO
    })
}

/// A port nobody listens on right now (the OS's choice of an ephemeral port).
fn free_port() -> u16 {
    let listener = TcpListener::bind((HOST, 0)).expect("a port on 127.0.0.1 can be bound");
    listener.local_addr().expect("a bound socket has an address").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

/// One message a [`Subscription`] received.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set only on a retained message delivered because the subscription was made (MQTT
    /// 3.1.1 clears it when forwarding a message published while the subscription exists).
    pub retain: bool,
}

impl Message {
    /// The payload as JSON; panics (with the payload) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|error| panic!("the payload on {} is not JSON ({error}): {self:?}", self.topic))
    }

    /// The payload as text (lossy for non-UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

impl fmt::Debug for Message {
    /// Shortens the payload: a deployment request carries a whole bundle, and failing tests
    /// print whole histories.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 512;
        let text = String::from_utf8_lossy(&self.payload[..self.payload.len().min(SHOWN)]).into_owned();
        let payload =
            if self.payload.len() > SHOWN { format!("{text}… ({} bytes)", self.payload.len()) } else { text };
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload", &payload)
            .field("retain", &self.retain)
            .finish()
    }
}

/// A test subscriber to one topic filter at QoS 1, with its own MQTT connection driven by a
/// background thread that records every message received. It reconnects by itself when the
/// broker goes away and comes back. Unsubscribes and disconnects when dropped.
pub struct Subscription {
    link: Arc<Link>,
    inbox: Mutex<Inbox>,
    client: rumqttc::Client,
    stopping: Arc<AtomicBool>,
    driver: Option<JoinHandle<()>>,
}

impl Subscription {
    fn connect(port: u16, filter: &str, user: Option<&User>) -> Result<Subscription, String> {
        let number = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("forecourt-testkit-{}-{port}-{number}", std::process::id());
        let mut options = MqttOptions::new(client_id.clone(), HOST, port);
        // A persistent session: while this subscriber is disconnected (and the broker runs),
        // Mosquitto keeps its subscription and queues the QoS 1 messages it misses. rumqttc's
        // default limit is 10 KiB, far too small for deployment requests.
        options.set_clean_session(false).set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(user) = user {
            options.set_credentials(&user.name, &user.password);
        }
        let (client, connection) = rumqttc::Client::new(options, 10);
        let link = Arc::new(Link {
            client_id,
            filter: filter.to_owned(),
            state: Mutex::new(LinkState::default()),
            changed: Condvar::new(),
        });
        let (sender, receiver) = mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let driver = {
            let (client, link, stopping) = (client.clone(), Arc::clone(&link), Arc::clone(&stopping));
            std::thread::Builder::new()
                .name(format!("mqtt {}", link.client_id))
                .spawn(move || drive(connection, &client, &link, &sender, &stopping))
                .expect("a thread can be spawned")
        };
        let subscription = Subscription {
            link,
            inbox: Mutex::new(Inbox { receiver, history: Vec::new(), unread: VecDeque::new() }),
            client,
            stopping,
            driver: Some(driver),
        };
        let state = subscription.link.wait(SUBSCRIBE_TIMEOUT, |state| state.subscribed || state.refused.is_some());
        if let Some(refused) = &state.refused {
            return Err(refused.clone());
        }
        assert!(state.subscribed, "no SUBACK for {filter:?} from port {port} within {SUBSCRIBE_TIMEOUT:?}: {state:?}");
        Ok(subscription)
    }

    /// The topic filter.
    pub fn filter(&self) -> &str {
        &self.link.filter
    }

    /// The MQTT client id (fixed for the subscription's lifetime, so its session persists).
    pub fn client_id(&self) -> &str {
        &self.link.client_id
    }

    /// The oldest message not yet returned by `recv_timeout` or `wait_for`, waiting up to
    /// `timeout` for one to arrive.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Message> {
        self.take_first(timeout, |_| true)
    }

    /// The oldest message not yet returned by `recv_timeout` or `wait_for` that satisfies
    /// `matches`, waiting up to `timeout` for one to arrive. The messages it passes over stay
    /// unread (for later calls) and are all in [`Subscription::received`].
    pub fn wait_for(&self, timeout: Duration, matches: impl Fn(&Message) -> bool) -> Option<Message> {
        self.take_first(timeout, matches)
    }

    /// Every message received so far, in the order they arrived (returned ones included).
    pub fn received(&self) -> Vec<Message> {
        let mut inbox = self.lock_inbox();
        inbox.drain();
        inbox.history.clone()
    }

    fn take_first(&self, timeout: Duration, matches: impl Fn(&Message) -> bool) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let mut inbox = self.lock_inbox();
        inbox.drain();
        if let Some(position) = inbox.unread.iter().position(|&index| matches(&inbox.history[index])) {
            let index = inbox.unread.remove(position).expect("the position is in range");
            return Some(inbox.history[index].clone());
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let message = inbox.receiver.recv_timeout(left).ok()?;
            inbox.history.push(message);
            let index = inbox.history.len() - 1;
            if matches(&inbox.history[index]) {
                return Some(inbox.history[index].clone());
            }
            inbox.unread.push_back(index);
        }
    }

    fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for Subscription {
    // By hand: rumqttc's Client is not Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("client_id", &self.link.client_id)
            .field("filter", &self.link.filter)
            .field("state", &*self.link.lock())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Unsubscribing first leaves the broker a session with nothing to queue. The driver
        // ends at the DISCONNECT, or at the next connection error when the broker is down.
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.client.try_unsubscribe(self.link.filter.clone());
        let _ = self.client.try_disconnect();
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}

/// Messages delivered by the driver thread, and what the test has seen of them.
#[derive(Debug)]
struct Inbox {
    receiver: mpsc::Receiver<Message>,
    /// Every message received, in order.
    history: Vec<Message>,
    /// Indexes into `history` of the messages not yet returned, oldest first.
    unread: VecDeque<usize>,
}

impl Inbox {
    /// Moves the messages that arrived into the history.
    fn drain(&mut self) {
        while let Ok(message) = self.receiver.try_recv() {
            self.history.push(message);
            self.unread.push_back(self.history.len() - 1);
        }
    }
}

/// The connection state of one subscriber, shared by its driver thread, the [`Subscription`]
/// (waiting for the first SUBACK) and the [`Broker`] (waiting for resubscription).
#[derive(Debug)]
struct Link {
    client_id: String,
    filter: String,
    state: Mutex<LinkState>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone)]
struct LinkState {
    /// CONNACKs received so far.
    connections: u64,
    /// Whether the current connection's session holds the subscription (SUBACK received).
    subscribed: bool,
    /// The broker's refusal of the subscription, if it refused.
    refused: Option<String>,
    /// The last connection error (for failure messages).
    last_error: Option<String>,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut LinkState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits up to `timeout` for `done`; returns the state either way.
    fn wait(&self, timeout: Duration, done: impl Fn(&LinkState) -> bool) -> LinkState {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |state| !done(state))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.clone()
    }
}

/// The driver thread of a subscription: polls the connection (which is what makes rumqttc
/// connect, reconnect, acknowledge and receive) until the subscription is dropped.
fn drive(
    mut connection: rumqttc::Connection,
    client: &rumqttc::Client,
    link: &Link,
    messages: &mpsc::Sender<Message>,
    stopping: &AtomicBool,
) {
    // Whether the broker's session for this client id holds the subscription.
    let mut session_subscribed = false;
    for event in connection.iter() {
        let stopping = stopping.load(Ordering::SeqCst);
        match event {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                // The subscription is made on every connection whose session does not hold it:
                // the first one, and any after the broker lost its state. A session the broker
                // kept still has it, and subscribing again would only resend the retained messages.
                if !(connack.session_present && session_subscribed) {
                    session_subscribed = false;
                    if !stopping {
                        let _ = client.try_subscribe(link.filter.clone(), QoS::AtLeastOnce);
                    }
                }
                link.update(|state| {
                    state.connections += 1;
                    state.subscribed = session_subscribed;
                });
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                let granted = suback.return_codes.iter().all(|code| matches!(code, SubscribeReasonCode::Success(_)));
                session_subscribed = granted;
                link.update(|state| {
                    state.subscribed = granted;
                    if !granted {
                        state.refused = Some(format!("{:?}", suback.return_codes));
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // The receiver is gone only while the subscription is being dropped.
                let _ = messages.send(Message {
                    topic: publish.topic,
                    payload: publish.payload.to_vec(),
                    retain: publish.retain,
                });
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => return,
            Ok(_) => {}
            Err(error) => {
                link.update(|state| {
                    state.subscribed = false;
                    state.last_error = Some(error.to_string());
                });
                if stopping {
                    return;
                }
                std::thread::sleep(RECONNECT_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_wildcard_subscription_receives_what_mosquitto_pub_publishes() {
        let broker = Broker::start();
        assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
        assert_eq!(broker.host(), "127.0.0.1");
        let status = broker.subscribe("forecourt/+/status");

        broker.publish("forecourt/other/metrics", b"{}", false);
        broker.publish("forecourt/kiosk-1/status", br#"{"state": "online"}"#, false);

        let message = status.recv_timeout(WAIT).expect("the status message arrives");
        assert_eq!(message.topic, "forecourt/kiosk-1/status");
        assert_eq!(message.json(), serde_json::json!({"state": "online"}));
        assert!(!message.retain, "a live message is not flagged retained: {message:?}");
        assert_eq!(status.received(), vec![message]);
    }

    #[test]
    fn wait_for_keeps_the_messages_it_passes_over() {
        let broker = Broker::start();
        let all = broker.subscribe("forecourt/#");
        for n in 0..3 {
            broker.publish(&format!("forecourt/d/{n}"), n.to_string().as_bytes(), false);
        }

        let last = all.wait_for(WAIT, |message| message.topic == "forecourt/d/2").expect("the last message arrives");
        assert_eq!(last.text(), "2");
        let topics = |messages: Vec<Message>| messages.into_iter().map(|message| message.topic).collect::<Vec<_>>();
        assert_eq!(topics(all.received()), ["forecourt/d/0", "forecourt/d/1", "forecourt/d/2"]);
        // The ones passed over are still there to be read, in order; the returned one is not.
        assert_eq!(all.recv_timeout(WAIT).expect("unread").topic, "forecourt/d/0");
        assert_eq!(all.recv_timeout(WAIT).expect("unread").topic, "forecourt/d/1");
        assert_eq!(all.recv_timeout(Duration::from_millis(100)), None);
    }

    #[test]
    fn a_late_subscriber_gets_the_retained_message_until_it_is_cleared() {
        let broker = Broker::start();
        // Larger than rumqttc's default 10 KiB packet limit, and than a pipe's buffer.
        let payload: Vec<u8> = (0..1_000_000u32).map(|n| (n % 251) as u8).collect();
        broker.publish("forecourt/d/deployment", &payload, true);

        let late = broker.subscribe("forecourt/d/deployment");
        let message = late.recv_timeout(WAIT).expect("the retained message is delivered on subscribing");
        assert!(message.retain);
        assert_eq!(message.payload, payload);

        broker.clear_retained("forecourt/d/deployment");
        // The removal itself is forwarded to current subscribers as an empty message.
        let cleared = late.recv_timeout(WAIT).expect("the empty message is forwarded");
        assert!(cleared.payload.is_empty(), "{cleared:?}");
        let later = broker.subscribe("forecourt/d/deployment");
        assert_eq!(later.recv_timeout(Duration::from_millis(300)), None, "no retained message after clearing");
    }

    #[test]
    fn a_subscription_survives_a_broker_restart_on_the_same_port() {
        let mut broker = Broker::start();
        let port = broker.port();
        let status = broker.subscribe("forecourt/+/status");
        broker.publish("forecourt/a/status", b"before", false);
        assert_eq!(status.recv_timeout(WAIT).expect("received before the stop").text(), "before");

        broker.stop();
        assert!(!accepts(port), "the port refuses connections while stopped");
        broker.restart();
        assert_eq!(broker.port(), port);

        broker.publish("forecourt/a/status", b"after", false);
        assert_eq!(status.recv_timeout(WAIT).expect("received after the restart").text(), "after");
        assert!(broker.log().contains("----- mosquitto run 2 -----"), "{}", broker.log());
    }
}
