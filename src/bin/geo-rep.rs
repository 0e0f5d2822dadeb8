//! `geo-rep`: parse, run, report. See `georep::cli` for the commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = georep::cli::Cli::parse();
    // The slave speaks the protocol on stdout: logs go to stderr only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GEOREP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match georep::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("geo-rep: {e:#}");
            if e.downcast_ref::<georep::cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
