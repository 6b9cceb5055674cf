//! The sled database: its trees, the `meta` keys, and the clean-shutdown marker.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sled::{Db, Tree};

use super::error::StoreError;

/// `meta` key: `[1]` while a [`Store`](super::Store) has the database open, `[0]` after a clean close.
const RUNNING: &[u8] = b"running";
/// `meta` key: the number of predictions (u64 big-endian) as of the last clean close.
const PREDICTION_COUNT: &[u8] = b"prediction_count";

/// sled's log file inside the database directory.
const DATA_FILE: &str = "db";
/// How long an open waits for sled's file lock (see [`open_db`]).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The database and its trees; cloning clones handles, not data.
#[derive(Debug, Clone)]
pub(crate) struct Trees {
    pub db: Db,
    pub predictions: Tree,
    pub audit: Tree,
    pub meta: Tree,
    /// sled's log file, to fsync after sled's own flush (see [`Trees::flush`]).
    data_file: Arc<File>,
}

impl Trees {
    /// Opens (creating) the database in `dir`. sled takes an exclusive file lock, so a second open of the
    /// same directory (another process, or a store not yet dropped) fails.
    pub fn open(dir: &Path, cache_capacity_mib: u64) -> Result<Self, StoreError> {
        let failed = |error: sled::Error| StoreError::Open { dir: dir.to_owned(), reason: error.to_string() };
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity_mib << 20)
            // The writer thread decides when to flush: an extra background fsync would only compete with it.
            .flush_every_ms(None);
        let db = open_db(&config).map_err(failed)?;
        let tree = |name: &str| db.open_tree(name).map_err(failed);
        let (predictions, audit, meta) = (tree("predictions")?, tree("audit")?, tree("meta")?);
        let io_failed = |error: std::io::Error| StoreError::Open { dir: dir.to_owned(), reason: error.to_string() };
        let data_file = File::open(dir.join(DATA_FILE)).map_err(io_failed)?;
        // A database created just now must stay reachable after a power loss: persist its directory entries.
        File::open(dir).and_then(|dir| dir.sync_all()).map_err(io_failed)?;
        Ok(Self { db, predictions, audit, meta, data_file: Arc::new(data_file) })
    }

    /// Whether `dir` holds a database (without creating one).
    pub fn exist_in(dir: &Path) -> bool {
        dir.join(DATA_FILE).is_file()
    }

    /// Whether a store had the database open and never closed it (a crash, SIGKILL, power loss).
    pub fn was_running(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(RUNNING)?.is_some_and(|value| value.as_ref() == [1]))
    }

    /// Marks the database open (not flushed: the caller flushes).
    pub fn mark_running(&self) -> Result<(), StoreError> {
        self.meta.insert(RUNNING, &[1])?;
        Ok(())
    }

    /// Records a clean close with the prediction count, so the next open need not count (not flushed).
    pub fn mark_closed(&self, predictions: u64) -> Result<(), StoreError> {
        self.meta.insert(PREDICTION_COUNT, &predictions.to_be_bytes())?;
        self.meta.insert(RUNNING, &[0])?;
        Ok(())
    }

    /// The number of predictions: as recorded at the last clean close, or counted (a full scan) after a
    /// crash, when the recorded figure cannot be trusted.
    pub fn prediction_count(&self, unclean: bool) -> Result<u64, StoreError> {
        let recorded = self.meta.get(PREDICTION_COUNT)?.and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok());
        match recorded {
            Some(bytes) if !unclean => Ok(u64::from_be_bytes(bytes)),
            _ => Ok(self.predictions.len() as u64),
        }
    }

    /// Makes every write so far durable, against a process crash and a power loss alike.
    ///
    /// sled 0.34's flush writes its buffers out and, on Linux, waits with `sync_file_range`, which is
    /// enough for a process crash (the page cache survives) but syncs neither the file's size nor the
    /// drive's write cache: the fdatasync that follows does. (Values over about 128 KiB go to sled's blob
    /// files, which sled never syncs; they are not covered against power loss.)
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.data_file.sync_data().map_err(|error| StoreError::Storage(format!("cannot sync the database: {error}")))
    }
}

/// Opens sled, waiting up to [`LOCK_WAIT`] for its file lock.
///
/// sled releases the lock from one of its IO threads a moment after the last handle is dropped, so opening
/// again at once in the same process (after a close, or in `forecourt audit verify` right after a stop) can
/// find it still held. Another process holding it still fails, [`LOCK_WAIT`] later.
fn open_db(config: &sled::Config) -> sled::Result<Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            // sled (pinned at 0.34.7) reports contention only in the message of an `Other` I/O error.
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(sled::Error::Io(error));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}
