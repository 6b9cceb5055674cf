//! The connection to the broker (rumqttc): connects with the retained Last Will, keeps
//! the deployment subscriptions, reconnects with exponential backoff, hands incoming
//! deployment requests over, and publishes with confirmation.
//!
//! One task drives rumqttc's event loop and never waits on anyone else (a stalled event
//! loop misses its keep-alive pings): it only forwards what arrives. Publishing waits for
//! the broker's PUBACK, one message at a time, which is what keeps the outbox in order.
//!
//! The session is persistent (clean_session off, the device id as client id): requests
//! pushed while the appliance was offline are delivered when it reconnects, and unacked
//! ones again after a crash, since requests are acknowledged only once recorded.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::{Mutex, mpsc, watch};

use super::config::{BrokerAddress, MqttConfig};
use crate::telemetry::names;

/// Requests handed to the intake and not yet taken; the event loop waits beyond it. Every
/// request taken is acknowledged through rumqttc's own request queue (64), which
/// therefore never fills with acks (at most this many plus the publisher's and the
/// status's one message each), so the waiting event loop cannot deadlock with the intake.
const REQUESTS: usize = 8;

/// The state of the connection, as the event loop last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connection {
    pub up: bool,
    /// Incremented at every connection (ConnAck).
    pub generation: u64,
    /// Whether the broker resumed the previous session: when it did not, rumqttc dropped
    /// the messages it had not yet seen acknowledged, and they must be sent again.
    pub session_resumed: bool,
}

/// What the event loop tells the publisher about QoS 1 messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Sent(u16),
    Acknowledged(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the MQTT client stopped")]
    Closed,
}

/// A cloneable handle to publish through and watch the connection.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    connection: watch::Receiver<Connection>,
    /// Held while a confirmed publish is in flight: one at a time.
    deliveries: Arc<Mutex<mpsc::UnboundedReceiver<Delivery>>>,
}

/// Everything `Link::start` hands back.
#[derive(Debug)]
pub struct Started {
    pub link: Link,
    /// Deployment requests as they arrive; acknowledge each with [`Link::acknowledge`].
    pub requests: mpsc::Receiver<Publish>,
    pub event_loop: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Starts the event loop; it connects (and reconnects) by itself.
    ///
    /// Fails only when the TLS files cannot be read.
    pub fn start(
        config: &MqttConfig,
        broker: &BrokerAddress,
        device: &str,
        last_will: Vec<u8>,
    ) -> Result<Started, String> {
        let transport = broker.transport()?;
        let topics = super::Topics::new(&config.topic_prefix);
        let mut options = MqttOptions::new(device, &broker.host, broker.port);
        options
            .set_transport(transport)
            .set_keep_alive(Duration::from_secs(config.keep_alive_secs))
            .set_clean_session(false)
            .set_manual_acks(true)
            // The policy's limit, exactly: rumqttc refuses a larger packet from its header,
            // before reading it. It fails the connection doing so, and the next connection
            // is then a clean session so the broker drops the packet instead of delivering
            // it forever (see `Driver::run`); a broker whose `message_size_limit` matches
            // never sends one.
            .set_max_packet_size(config.max_incoming_packet_bytes(), 16 << 20)
            .set_last_will(LastWill::new(topics.status(device), last_will, QoS::AtLeastOnce, true));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            options.set_credentials(user, password);
        }
        let (client, event_loop) = AsyncClient::new(options, 64);
        let (connection_tx, connection) = watch::channel(Connection::default());
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let (requests_tx, requests) = mpsc::channel(REQUESTS);
        let subscriptions: Vec<String> = std::iter::once(topics.device_deploy(device))
            .chain(config.groups.iter().map(|group| topics.group_deploy(group)))
            .collect();
        let driver = Driver {
            client: client.clone(),
            connection: connection_tx,
            deliveries: deliveries_tx,
            requests: requests_tx,
            subscriptions,
            backoff: Backoff::new(config.reconnect_min_ms, config.reconnect_max_ms),
            broker: broker.label(),
        };
        let event_loop = tokio::spawn(driver.run(event_loop));
        let link = Link { client, connection, deliveries: Arc::new(Mutex::new(deliveries)) };
        Ok(Started { link, requests, event_loop })
    }

    pub fn connection(&self) -> watch::Receiver<Connection> {
        self.connection.clone()
    }

    pub fn is_connected(&self) -> bool {
        self.connection.borrow().up
    }

    /// Publishes at QoS 1 and returns once the broker acknowledged it, waiting through
    /// disconnections for as long as it takes (sending again when a new session lost it).
    pub async fn publish_confirmed(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), LinkError> {
        let mut deliveries = self.deliveries.lock().await;
        let mut connection = self.connection.clone();
        'send: loop {
            let generation = connection.wait_for(|state| state.up).await.map_err(|_| LinkError::Closed)?.generation;
            while deliveries.try_recv().is_ok() {}
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.clone())
                .await
                .map_err(|_| LinkError::Closed)?;
            let mut sent = None;
            loop {
                tokio::select! {
                    delivery = deliveries.recv() => match delivery.ok_or(LinkError::Closed)? {
                        Delivery::Sent(pkid) => sent = Some(pkid),
                        Delivery::Acknowledged(pkid) if Some(pkid) == sent => return Ok(()),
                        Delivery::Acknowledged(_) => {}
                    },
                    changed = connection.changed() => {
                        changed.map_err(|_| LinkError::Closed)?;
                        let state = *connection.borrow_and_update();
                        if state.up && state.generation != generation && !state.session_resumed {
                            continue 'send;
                        }
                    }
                }
            }
        }
    }

    /// Acknowledges an incoming request: the broker will not deliver it again.
    pub async fn acknowledge(&self, request: &Publish) {
        // Fails only when the client stopped; the request then comes again next session.
        let _ = self.client.ack(request).await;
    }

    /// Says goodbye to the broker (no Last Will follows a clean disconnect).
    pub async fn disconnect(&self) {
        let _ = self.client.disconnect().await;
    }
}

/// Drives the event loop: the only code that polls it.
struct Driver {
    client: AsyncClient,
    connection: watch::Sender<Connection>,
    deliveries: mpsc::UnboundedSender<Delivery>,
    requests: mpsc::Sender<Publish>,
    subscriptions: Vec<String>,
    backoff: Backoff,
    broker: String,
}

impl Driver {
    async fn run(mut self, mut event_loop: EventLoop) {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                    // Back to a persistent session from the next connection on.
                    event_loop.mqtt_options.set_clean_session(false);
                    self.connected(connack.session_present);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    // Waits while the intake is behind: back-pressure, not loss. The broker
                    // sends no more than its in-flight window of unacknowledged requests.
                    if self.requests.send(publish).await.is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let _ = self.deliveries.send(Delivery::Acknowledged(ack.pkid));
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                    let _ = self.deliveries.send(Delivery::Sent(pkid));
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    self.disconnected();
                    return;
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
                ))) => {
                    // The broker would deliver the same packet again on a resumed session, and
                    // fail it again: once, start a clean session to make it drop the packet.
                    tracing::error!(broker = %self.broker, size, limit = event_loop.mqtt_options.max_packet_size(),
                        "the broker sent a packet over mqtt.max_bundle_mib; reconnecting with a clean session to drop it \
                         (set the broker's message_size_limit to keep such packets from devices)");
                    event_loop.mqtt_options.set_clean_session(true);
                    self.disconnected();
                }
                Err(error) => {
                    let first = self.connection.borrow().up || self.connection.borrow().generation == 0;
                    self.disconnected();
                    let wait = self.backoff.next();
                    if first {
                        tracing::warn!(broker = %self.broker, %error, retry_in = ?wait, "the fleet broker is unreachable");
                    } else {
                        tracing::debug!(broker = %self.broker, %error, retry_in = ?wait, "reconnecting to the fleet broker");
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn connected(&mut self, session_resumed: bool) {
        self.backoff.reset();
        metrics::gauge!(names::FLEET_CONNECTED).set(1.0);
        metrics::counter!(names::FLEET_CONNECTIONS).increment(1);
        let generation = self.connection.borrow().generation + 1;
        tracing::info!(broker = %self.broker, session_resumed, "connected to the fleet broker");
        self.connection.send_replace(Connection { up: true, generation, session_resumed });
        // Subscribing again is harmless when the session kept them, and needed when it did
        // not. From a task: the event loop must not wait on its own request channel.
        let client = self.client.clone();
        let topics = self.subscriptions.clone();
        tokio::spawn(async move {
            let filters = topics.into_iter().map(|topic| rumqttc::SubscribeFilter::new(topic, QoS::AtLeastOnce));
            let _ = client.subscribe_many(filters).await;
        });
    }

    fn disconnected(&mut self) {
        metrics::gauge!(names::FLEET_CONNECTED).set(0.0);
        self.connection.send_if_modified(|state| std::mem::replace(&mut state.up, false));
    }
}

/// Exponential backoff between connection attempts.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64) -> Self {
        let min = Duration::from_millis(min_ms);
        Self { min, max: Duration::from_millis(max_ms), next: min }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::new(100, 500);
        let waits: Vec<u64> = (0..5).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(100));
    }
}
