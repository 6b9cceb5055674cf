//! The fleet simulation of issue 5: twenty appliances on this machine (the real binary, each
//! its own process and data folder) in one group on one private Mosquitto; one `forecourt
//! fleet push` to the group; every appliance converges on the new version. The time to
//! converge is reported, not asserted beyond a generous sanity bound, since it depends on the
//! machine and its load:
//!
//! ```sh
//! cargo test --release -p forecourt-e2e --test fleet_simulation -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use forecourt_testkit::{Broker, FleetKit, Packaging, SHIPPED, Server, Subscription, car, forecourt};
use serde_json::{Value, json};

const DEVICES: usize = 20;
const GROUP: &str = "dealers";
const VERSION: &str = "1.1.0";
const DEPLOYMENT: &str = "simulation-1";
/// The push's own timeout, and the sanity bound on the time to converge.
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the appliances may take to come online, and their statuses to follow a change.
const WAIT: Duration = Duration::from_secs(120);
/// How long progress messages may trail the push's exit (the push ends at the last final one).
const TRAILING: Duration = Duration::from_secs(10);
/// The steps of a deployment without a canary, in order.
const STEPS: [&str; 6] = ["received", "verified", "staged", "loaded", "smoke_tested", "active"];

#[test]
fn twenty_appliances_in_one_group_converge_on_one_push() {
    let broker = Broker::start();
    let kit = FleetKit::new();
    let fcb = kit.package(VERSION, Packaging::Signed);
    let devices: Vec<String> = (1..=DEVICES).map(|n| format!("dealer-{n:02}")).collect();
    let statuses = broker.subscribe("forecourt/+/status");
    let mut newest = BTreeMap::new();

    eprintln!("load average before start-up: {}", load_average());
    let starting = Instant::now();
    let servers = start_appliances(&kit, &broker, &devices);
    await_statuses(&statuses, &mut newest, &devices, "online with car-price 1.0.0", |status| {
        status["online"] == true && status["bundles"]["car-price"] == SHIPPED
    });
    assert!(newest.values().all(|status| status["groups"] == json!([GROUP])), "{newest:?}");
    eprintln!(
        "{DEVICES} appliances started and online in {:.1} s; resident memory {}",
        starting.elapsed().as_secs_f64(),
        memory(&servers)
    );

    let progress = broker.subscribe(&format!("forecourt/+/deployments/{DEPLOYMENT}"));
    eprintln!("load average before the push: {}", load_average());
    let pushed = Instant::now();
    let (output, wall, arrivals) = push_and_follow(&kit, &broker, &fcb, &progress, pushed);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the push failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stderr.contains(&format!("{DEVICES} of {DEVICES} devices ok")), "{stderr}");

    // One deployment per device, through every step to `active`.
    let mut by_device: BTreeMap<String, Vec<(Duration, Value)>> = BTreeMap::new();
    for (at, topic, message) in arrivals {
        let device = message["device"].as_str().unwrap_or_default().to_owned();
        assert_eq!(topic, format!("forecourt/{device}/deployments/{DEPLOYMENT}"), "{message}");
        by_device.entry(device).or_default().push((at, message));
    }
    assert_eq!(by_device.keys().collect::<Vec<_>>(), devices.iter().collect::<Vec<_>>(), "devices that answered");
    let mut active_at = Vec::new();
    let mut on_device = Vec::new();
    let mut received_clock = Vec::new();
    let mut stages: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len() - 1];
    for (device, messages) in &by_device {
        let mut steps: Vec<&str> =
            messages.iter().map(|(_, message)| message["step"].as_str().unwrap_or("?")).collect();
        steps.dedup(); // a QoS 1 redelivery repeats a step
        assert_eq!(steps, STEPS, "{device}: {messages:?}");
        let (at, last) = messages.last().expect("a device that answered sent a message");
        assert_eq!(
            (&last["final"], &last["ok"], &last["version"], &last["previous"]),
            (&json!(true), &json!(true), &json!(VERSION), &json!(SHIPPED)),
            "{device}: {last}"
        );
        active_at.push(*at);
        let step_clock = |step: &str| {
            let (_, message) = messages.iter().find(|(_, message)| message["step"] == step).expect("every step came");
            clock_ms(&message["time"])
        };
        for (index, pair) in STEPS.windows(2).enumerate() {
            stages[index].push(ms((step_clock(pair[1]) + DAY_MS - step_clock(pair[0])) % DAY_MS));
        }
        let received = clock_ms(&messages[0].1["time"]);
        on_device.push(Duration::from_millis((clock_ms(&last["time"]) + DAY_MS - received) % DAY_MS));
        received_clock.push(received);
        assert!(stdout.lines().any(|line| line.contains(device.as_str()) && line.contains(VERSION)), "{stdout}");
    }

    // Every appliance serves the new version, and its retained status says so.
    for (device, server) in devices.iter().zip(&servers) {
        let reply = server.post_json("/v1/predict/car-price", &car());
        assert_eq!((reply.status, &reply.json["version"]), (200, &json!(VERSION)), "{device}: {reply:?}");
    }
    await_statuses(&statuses, &mut newest, &devices, "car-price 1.1.0", |status| {
        status["online"] == true && status["bundles"]["car-price"] == VERSION
    });
    let retained = retained_statuses(&broker, &devices);
    for (device, status) in &retained {
        assert_eq!((&status["online"], &status["bundles"]["car-price"]), (&json!(true), &json!(VERSION)), "{device}");
    }

    active_at.sort();
    on_device.sort();
    let fan_out = (received_clock.iter().max().unwrap() + DAY_MS - received_clock.iter().min().unwrap()) % DAY_MS;
    eprintln!("time to converge, {DEVICES} appliances, one push of car-price {VERSION} to group {GROUP}:");
    eprintln!("  push wall time (the command, start to exit): {:.2} s", wall.as_secs_f64());
    eprintln!(
        "  `active` received from the push's start: first {}, median {}, last {}",
        seconds(active_at[0]),
        seconds(median(&active_at)),
        seconds(active_at[DEVICES - 1])
    );
    eprintln!(
        "  on each device, received -> active: min {}, median {}, max {}",
        seconds(on_device[0]),
        seconds(median(&on_device)),
        seconds(on_device[DEVICES - 1])
    );
    let medians: Vec<String> = STEPS[1..]
        .iter()
        .zip(&mut stages)
        .map(|(step, times)| {
            times.sort();
            format!("{step} {}", seconds(median(times)))
        })
        .collect();
    eprintln!("  median time to each step from the one before, on the devices: {}", medians.join(", "));
    eprintln!("  the request reached the last device {} after the first (device clocks)", seconds(ms(fan_out)));
    eprintln!("load average after the push: {}", load_average());
    assert!(active_at[DEVICES - 1] < PUSH_TIMEOUT, "sanity bound: converged only after {:?}", active_at[DEVICES - 1]);
}

/// Starts one appliance per device at once (each `start` waits for its readiness).
fn start_appliances(kit: &FleetKit, broker: &Broker, devices: &[String]) -> Vec<Server> {
    let started: Vec<std::thread::Result<Server>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .iter()
            .map(|device| {
                scope.spawn(move || {
                    kit.appliance(broker, device, &[GROUP])
                        // Light processes: one inference thread, few plugin instances, and
                        // metrics at the production interval.
                        .env("FORECOURT_SERVER__WORKERS", "1")
                        .env("FORECOURT_PLUGINS__MAX_INSTANCES", "16")
                        .env("FORECOURT_MQTT__METRICS_INTERVAL_SECS", "30")
                        .start()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join()).collect()
    });
    let failed = started.iter().filter(|result| result.is_err()).count();
    assert_eq!(failed, 0, "{failed} of {DEVICES} appliances did not start (their stderr is printed above)");
    started.into_iter().flatten().collect()
}

/// Runs `forecourt fleet push` to the group on a thread while recording every progress
/// message of the deployment with its arrival time from `pushed`; returns the push's output,
/// its wall time, and the messages (arrival, topic, payload).
fn push_and_follow(
    kit: &FleetKit,
    broker: &Broker,
    fcb: &std::path::Path,
    progress: &Subscription,
    pushed: Instant,
) -> (std::process::Output, Duration, Vec<(Duration, String, Value)>) {
    let url = broker.url();
    let expect = DEVICES.to_string();
    let timeout = format!("{}s", PUSH_TIMEOUT.as_secs());
    std::thread::scope(|scope| {
        let push = scope.spawn(|| {
            let output = forecourt(&[
                &"fleet",
                &"push",
                &"--broker",
                &url,
                &"--bundle",
                &fcb,
                &"--group",
                &GROUP,
                &"--expect",
                &expect,
                &"--timeout",
                &timeout,
                &"--id",
                &DEPLOYMENT,
                &"--key",
                &kit.key(),
            ]);
            (output, pushed.elapsed())
        });
        let mut arrivals = Vec::new();
        let mut finals = 0;
        let mut deadline = pushed + PUSH_TIMEOUT + TRAILING;
        let mut push_ended = false;
        while finals < DEVICES || !push.is_finished() {
            if !push_ended && push.is_finished() {
                push_ended = true;
                deadline = deadline.min(Instant::now() + TRAILING);
            }
            if Instant::now() > deadline {
                break;
            }
            if let Some(message) = progress.recv_timeout(Duration::from_millis(50)) {
                let json = message.json();
                finals += usize::from(json["final"] == true);
                arrivals.push((pushed.elapsed(), message.topic, json));
            }
        }
        let (output, wall) = push.join().expect("the push thread does not panic");
        (output, wall, arrivals)
    })
}

/// Follows `forecourt/+/status`, keeping each device's newest status in `newest`, until
/// every device's satisfies `done`.
#[track_caller]
fn await_statuses(
    subscription: &Subscription,
    newest: &mut BTreeMap<String, Value>,
    devices: &[String],
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let missing: Vec<&String> = devices.iter().filter(|device| !newest.get(*device).is_some_and(&done)).collect();
        if missing.is_empty() {
            return;
        }
        let left = deadline.checked_duration_since(Instant::now());
        let Some(message) = left.and_then(|left| subscription.recv_timeout(left)) else {
            panic!("not {what} within {WAIT:?}: {missing:?}; newest statuses: {newest:?}");
        };
        newest.insert(device_of(&message.topic), message.json());
    }
}

/// Every device's retained status, as a newcomer subscribing now gets it.
fn retained_statuses(broker: &Broker, devices: &[String]) -> BTreeMap<String, Value> {
    let subscription = broker.subscribe("forecourt/+/status");
    let mut retained = BTreeMap::new();
    while retained.len() < devices.len() {
        let Some(message) = subscription.recv_timeout(Duration::from_secs(10)) else { break };
        assert!(message.retain, "a status arrived live rather than retained: {message:?}");
        retained.insert(device_of(&message.topic), message.json());
    }
    assert_eq!(retained.keys().collect::<Vec<_>>(), devices.iter().collect::<Vec<_>>(), "retained statuses");
    retained
}

/// `kiosk-1` of `forecourt/kiosk-1/status`.
fn device_of(topic: &str) -> String {
    topic.split('/').nth(1).unwrap_or_default().to_owned()
}

const DAY_MS: u64 = 86_400_000;

/// The time of day in milliseconds of an RFC 3339 UTC time with milliseconds
/// (`2026-01-01T12:34:56.789Z`), the appliances' format.
#[track_caller]
fn clock_ms(time: &Value) -> u64 {
    let text = time.as_str().unwrap_or_default();
    let clock = text.split_once('T').map(|(_, clock)| clock.trim_end_matches('Z')).unwrap_or_default();
    let parts: Vec<f64> = clock.split(':').filter_map(|part| part.parse().ok()).collect();
    let [hours, minutes, seconds] = parts[..] else { panic!("not an RFC 3339 UTC time: {time}") };
    ((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0).round() as u64
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The appliances' resident memory: total and median.
fn memory(servers: &[Server]) -> String {
    let mut kib: Vec<u64> = servers
        .iter()
        .filter_map(|server| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .collect();
    kib.sort_unstable();
    let Some(middle) = kib.get(kib.len() / 2) else { return "unknown".to_owned() };
    format!("{} MiB in all, {} MiB median", kib.iter().sum::<u64>() / 1024, middle / 1024)
}
