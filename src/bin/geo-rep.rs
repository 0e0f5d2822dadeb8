//! `geo-rep`: parse, run, report. See `georep::cli` for the commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = georep::cli::Cli::parse();
    // A monitor logs to its session's file, set up once the session is
    // known; everything else (the slave speaks the protocol on stdout) logs
    // to stderr.
    if !cli.runs_monitor() {
        georep::cli::logging::init_stderr();
    }
    match georep::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause may quote a slave or a file name (see `terminal`).
            let text = format!("{e:#}");
            eprintln!("geo-rep: {}", georep::terminal::escape_controls(&text));
            if e.downcast_ref::<georep::cli::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
