//! The appliance's side of the systemd service protocol (`sd_notify`): it owns telling the
//! service manager that start-up is over (`READY=1`, sent only once the bundles are loaded
//! and the server answers), that the process is alive (`WATCHDOG=1` every half of
//! `WATCHDOG_USEC`), and that it is draining (`STOPPING=1`).
//!
//! The unit in `firmware-images/` is `Type=notify` with `WatchdogSec=`: systemd orders
//! dependants after readiness, and restarts the service when the keep-alives stop. Outside
//! such a unit (`NOTIFY_SOCKET` unset: `make run`, the tests, a container) every call is a
//! no-op. A message that cannot be sent is logged, never fatal: serving matters more.
//!
//! The keep-alive task runs on the async runtime, so it proves that the runtime still
//! schedules tasks and timers (a wedged runtime also stops answering HTTP).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

/// Where to send notifications, and how often the watchdog wants a keep-alive.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET`: a path, or an abstract socket name starting with `@`.
    socket: Option<OsString>,
    /// `WATCHDOG_USEC`, when the watchdog is on and meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The service manager's socket and watchdog period from the environment systemd sets
    /// (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`); disabled when they are unset.
    pub fn from_env() -> Self {
        Self { socket: std::env::var_os("NOTIFY_SOCKET"), watchdog: sd_notify::watchdog_enabled() }
    }

    /// A notifier for a given socket and watchdog period (tests, other service managers).
    pub fn to_socket(socket: impl Into<OsString>, watchdog: Option<Duration>) -> Self {
        Self { socket: Some(socket.into()), watchdog }
    }

    /// Whether a service manager listens.
    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Start-up is complete: bundles loaded, the server answering ready.
    pub fn ready(&self) {
        self.send_or_log(&[NotifyState::Ready, NotifyState::Status("serving")]);
    }

    /// Shutdown has begun: in-flight requests are draining.
    pub fn stopping(&self) {
        self.send_or_log(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    /// Sends `WATCHDOG=1` every half watchdog period until the runtime shuts down; `None`
    /// when no watchdog is configured. Call it early: start-up (loading bundles) counts.
    pub fn spawn_watchdog(&self) -> Option<tokio::task::JoinHandle<()>> {
        let period = self.watchdog.filter(|_| self.is_enabled())? / 2;
        let notifier = self.clone();
        tracing::info!(?period, "systemd watchdog keep-alives on");
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                notifier.send_or_log(&[NotifyState::Watchdog]);
            }
        }))
    }

    fn send_or_log(&self, states: &[NotifyState<'_>]) {
        if let Err(error) = self.send(states) {
            tracing::warn!(%error, socket = ?self.socket, "cannot notify systemd");
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) -> io::Result<()> {
        let Some(socket) = &self.socket else { return Ok(()) };
        let message: String = states.iter().map(|state| format!("{state}\n")).collect();
        let sent = connect(socket)?.send(message.as_bytes())?;
        if sent != message.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"));
        }
        Ok(())
    }
}

/// A datagram socket connected to `socket`: a path, or `@name` for the abstract namespace
/// (systemd uses those in containers).
fn connect(socket: &OsStr) -> io::Result<UnixDatagram> {
    use std::os::unix::ffi::OsStrExt;
    let datagram = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            datagram.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?;
        }
        None => datagram.connect(socket)?,
    }
    Ok(datagram)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, std::path::PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (dir, path, socket)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buffer = [0u8; 256];
        let length = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn ready_and_stopping_reach_the_socket() {
        let (_dir, path, socket) = listener();
        let notifier = Notifier::to_socket(&path, None);
        notifier.ready();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving\n");
        notifier.stopping();
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=draining\n");
    }

    #[test]
    fn an_abstract_socket_is_reached_too() {
        let name = format!("forecourt-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::to_socket(format!("@{name}"), None).ready();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving\n");
    }

    #[tokio::test]
    async fn the_watchdog_sends_keep_alives_at_half_the_period() {
        let (_dir, path, socket) = listener();
        let task = Notifier::to_socket(&path, Some(Duration::from_millis(100))).spawn_watchdog().unwrap();
        let started = std::time::Instant::now();
        let socket = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(receive(&socket), "WATCHDOG=1\n");
            }
        });
        socket.await.unwrap();
        // The first keep-alive is immediate, then one every 50 ms.
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
        task.abort();
    }

    #[tokio::test]
    async fn without_a_socket_everything_is_a_no_op() {
        let notifier = Notifier::default();
        assert!(!notifier.is_enabled());
        notifier.ready();
        notifier.stopping();
        assert!(notifier.spawn_watchdog().is_none());
        let no_watchdog = Notifier::to_socket("/nonexistent/notify.sock", None);
        assert!(no_watchdog.spawn_watchdog().is_none());
        // A socket that is gone is logged, not fatal.
        no_watchdog.ready();
        assert!(no_watchdog.send(&[NotifyState::Ready]).is_err());
    }
}
