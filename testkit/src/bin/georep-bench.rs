//! Benchmark georep against rsync over the same loopback sshd (issue 6).
//!
//! `cargo run --release --bin georep-bench -- [--quick|--full] [workload…]`;
//! see README.md, "Benchmarks".

use georep_testkit::bench;

use clap::Parser;

fn main() {
    let opts = bench::Opts::parse();
    if let Err(e) = bench::run(opts) {
        eprintln!("georep-bench: {e:#}");
        std::process::exit(1);
    }
}
