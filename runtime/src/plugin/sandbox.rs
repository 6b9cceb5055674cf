//! The state of one plugin instance's store: a WASI context that grants nothing, the
//! per-call randomness ([`Entropy`]), and the memory limiter that remembers whether it
//! refused a grow (so a guest's abort after a failed allocation is reported as the memory
//! limit, not as a generic trap).

use std::time::Duration;

use super::entropy::Entropy;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// How much of a guest's stderr is kept for the error message (a panic's text). A guest
/// writing more traps, which is reported like any other trap.
const STDERR_CAPACITY: usize = 4096;

/// Tables hold function references; real plugins need a few hundred entries.
const MAX_TABLE_ELEMENTS: usize = 100_000;

pub(super) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    memory_limit: usize,
    pub(super) memory_limit_hit: bool,
    /// What `wasi:random` answers; the host links it in place of the WasiCtx's own
    /// generators, which are seeded from the OS.
    pub(super) entropy: Entropy,
}

impl Sandbox {
    pub(super) fn new(memory_limit: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        // No preopened directories, environment, arguments or network; clocks frozen at
        // zero and randomness keyed by the request (`entropy`) so output depends on the
        // request alone. stdin is empty, stdout discarded.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            stderr,
            memory_limit,
            memory_limit_hit: false,
            entropy: Entropy::new(),
        }
    }

    /// What the guest wrote to stderr, lossily decoded.
    pub(super) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_owned()
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_limit_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// A clock stopped at the epoch: plugins are pure functions of their request.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
