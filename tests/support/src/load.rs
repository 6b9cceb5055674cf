//! Load for end-to-end tests: car-price requests in a loop on a thread of their own, as a
//! busy kiosk sends them, counting what came back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::{Client, car};

/// Requests car-price in a loop until [`Load::finish`], counting failures and the versions served.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<LoadReport>>,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failures: Vec<String>,
    /// Each version served, with when it was first seen.
    pub versions: Vec<(Instant, String)>,
}

impl Load {
    /// Starts the loop through `client` (with its token, if it has one).
    pub fn start(client: Client) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut report = LoadReport::default();
            while !flag.load(Ordering::SeqCst) {
                match client.try_post_json("/v1/predict/car-price", &car()) {
                    Ok(reply) if reply.status == 200 => {
                        report.ok += 1;
                        let version = reply.json["version"].as_str().unwrap_or_default().to_owned();
                        if report.versions.last().is_none_or(|(_, last)| *last != version) {
                            report.versions.push((Instant::now(), version));
                        }
                    }
                    Ok(reply) => report.failures.push(format!("{}: {}", reply.status, reply.json)),
                    Err(error) => report.failures.push(error.to_string()),
                }
            }
            report
        });
        Self { stop, thread: Some(thread) }
    }

    /// Stops the loop and reports.
    pub fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().expect("finished once").join().expect("the load thread does not panic")
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
