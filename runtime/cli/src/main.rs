//! The `forecourt` binary: parse the command line, run.

use clap::Parser;

mod cli;

/// mimalloc: per-request allocations (JSON, tensors, stored records) are many and small,
/// and glibc's malloc spent ~14% of the server's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    forecourt::idle::set_release(release_free_memory);
    exit_quietly_on_a_closed_pipe();
    cli::run(cli::Cli::parse())
}

/// Transparent huge pages off for this process. mimalloc reserves its arena as 1 GiB and,
/// where THP is `madvise` (Ubuntu) or `always` (Debian), the kernel backs each touched part
/// with 2 MiB pages: the idle appliance held 152-192 MiB resident, 91 MiB without THP, and
/// 205 against 133 MiB after 10 s of load (measured with the three example bundles). An
/// appliance is sized by its resident memory, not by a few TLB misses. The flag is the
/// process's (every thread, later mappings and ONNX Runtime's malloc too); a kernel without
/// it only costs memory, so a failure is ignored.
fn no_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// What an idle long-lived thread calls (runtime/src/idle.rs): mimalloc returns the pages
/// this thread freed to the OS now instead of at its next allocation, which an idle thread
/// never makes. `force` also purges, process-wide, the free pages other threads returned
/// less than mimalloc's purge delay ago: under a trickle of requests (one every few
/// seconds) each idle spell ends in a collect and the next request faults its pages in
/// again, which costs that request microseconds, not the box its memory. Measured after
/// 10 s of /v1 and 10 s of 1,000-row batches: 150 -> 141 MiB within the second after.
fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointers and is thread safe; it only returns to the OS
    // pages no allocation holds.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// `forecourt ... | head` closes stdout early. Rust ignores SIGPIPE, so the next
/// `println!` panics ("failed printing to stdout: Broken pipe"); a Unix tool stops
/// quietly instead. Restoring SIGPIPE's default would need an `unsafe` libc call; this
/// hook turns exactly that panic into a quiet exit and leaves every other panic as it was.
fn exit_quietly_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
