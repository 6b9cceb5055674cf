//! Giving memory back once a long-lived thread goes quiet.
//!
//! The allocator the binary chooses keeps the pages a thread freed for that thread's next
//! allocations and returns them to the OS lazily, during that same thread's later calls
//! into it. A thread that stops after a burst of work makes no later calls, so whatever the
//! burst freed stays resident until the next burst: a box that answered a batch load at
//! noon held that memory all afternoon. Threads that wait for work on a channel (the
//! inference workers, the store writer) call [`thread_idle`] once they have waited [`AFTER`]
//! with nothing to do; the binary installs what that does ([`set_release`]).
//!
//! The async runtime's workers do not: a parked worker runs nothing until something wakes
//! it, so it cannot notice its own idle second, and releasing at every park instead cost a
//! 1,000-row batch 15-20% more CPU a row (its body's buffers were faulted in again).
//!
//! This module names no allocator and must not: the library runs under whichever one the
//! binary (or a test) links. Without a hook, [`thread_idle`] does nothing.

use std::sync::OnceLock;
use std::time::Duration;

/// How long a thread waits with nothing to do before it gives its free memory back. Long
/// enough that a thread under load never gets there (a release costs more than a request),
/// short enough that memory follows the load down within a second.
pub const AFTER: Duration = Duration::from_secs(1);

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Installs what an idle thread calls; the first call wins (a process has one allocator).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives the calling thread's free memory back, if the binary installed a way to.
pub fn thread_idle() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
