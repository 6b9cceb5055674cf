//! The `forecourt` binary: parse the command line, run.

use clap::Parser;

/// mimalloc: per-request allocations (JSON, tensors, stored records) are many and small,
/// and glibc's malloc spent ~14% of the server's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    exit_quietly_on_a_closed_pipe();
    forecourt::cli::run(forecourt::cli::Cli::parse())
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
