//! Benchmark georep against rsync over the same loopback sshd (issue 6).
//!
//! `cargo run --release --bin georep-bench -- [--quick|--full] [workload…]`;
//! see README.md, "Benchmarks".

#[path = "../bench/mod.rs"]
mod bench;

use clap::Parser;

fn main() {
    let opts = bench::Opts::parse();
    if let Err(e) = bench::run(opts) {
        eprintln!("georep-bench: {e:#}");
        std::process::exit(1);
    }
}
