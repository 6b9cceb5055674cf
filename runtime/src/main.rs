//! The `forecourt` binary: parse the command line, run.

use clap::Parser;

/// mimalloc: per-request allocations (JSON, tensors, stored records) are many and small,
/// and glibc's malloc spent ~14% of the server's CPU on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    forecourt::cli::run(forecourt::cli::Cli::parse())
}
