//! The `forecourt` binary: parse the command line, run.

use clap::Parser;

/// mimalloc: per-request allocations (JSON, tensors, stored records) are many and small,
/// and glibc's malloc spent ~14% of the server's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    return_freed_memory_at_once();
    no_transparent_huge_pages();
    exit_quietly_on_a_closed_pipe();
    forecourt::cli::run(forecourt::cli::Cli::parse())
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

/// mimalloc's option `purge_delay` (mimalloc v3's `mi_option_purge_delay`; the crate exports no
/// constant for it). Checked by the test below against v3's documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc v3 hands freed pages back to the kernel only after `purge_delay` (1 s, 10 s for
/// whole arena chunks), and in practice an idle appliance never got them back: 90-97 MiB resident
/// idle, 210 MiB fifteen seconds after the load. Purging at once: 80 MiB idle, 130-140 after the
/// load (with `store.cache_capacity_mib` 16; the three example bundles). The price is more
/// madvise calls and page faults under load, about 4% more CPU per /v1 request (bench/load.sh
/// with `COMPARE_ENV=MIMALLOC_PURGE_DELAY=1000`, at the edge of this machine's noise); a delay
/// of 100 ms kept 86 MiB idle. An `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn return_freed_memory_at_once() {
    // SAFETY: sets one integer in mimalloc's option table, before any other thread exists (the
    // call is documented as not thread-safe). The option id is checked by a test.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, 0);
    }
}

/// `forecourt ... | head` closes stdout early. Rust ignores SIGPIPE, so the next
/// `println!` panics ("failed printing to stdout: Broken pipe"); a Unix tool stops
/// quietly instead. Restoring SIGPIPE's default would need `unsafe` (denied here); this
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads one integer from mimalloc's option table.
        #[allow(unsafe_code)]
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        let expected = std::env::var("MIMALLOC_PURGE_DELAY").map_or(1000, |value| value.parse().unwrap());
        assert_eq!(
            delay, expected,
            "option {MI_OPTION_PURGE_DELAY} is not mimalloc v3's purge_delay (1000 ms by default)"
        );
    }
}
