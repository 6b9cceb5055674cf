//! The `forecourt` binary: parse the command line, set up logging, run.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = forecourt::cli::Cli::parse();
    forecourt::cli::init_logging(cli.log_format);
    forecourt::cli::run(cli)
}
