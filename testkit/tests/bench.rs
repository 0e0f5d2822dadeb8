//! The benchmark runner's `--quick` profile as a smoke test: every workload
//! runs end to end against the real sshd, and each first sync is verified
//! against its master by the runner itself. The figures are not judged here
//! (tests never assert wall-clock budgets); that the table holds a measured
//! row for every workload is.

use std::process::Command;

/// The rows `--quick` prints, by the start of their workload column.
const ROWS: &[&str] = &[
    "small-initial ",
    "big-initial ",
    "big-delta ",
    "incremental ",
    "latency 1 write",
    "latency burst",
    "rename-storm dir",
    "rename-storm 100 files",
    "wan small-initial",
    "wan big-delta",
    "wan text-initial compression zstd",
    "wan text-initial compression none",
    "volume small-initial",
];

#[test]
fn the_quick_benchmark_runs_every_workload_and_prints_a_measured_row_for_each() {
    let work = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let mut bench = Command::new(env!("CARGO_BIN_EXE_georep-bench"));
    bench
        .arg("--quick")
        .arg("--dir")
        .arg(work.path())
        .arg("--out")
        .arg(out_dir.path());
    // The volume workload needs root and FUSE; only CI insists on it.
    let without_volume =
        georep_testkit::glusterfs::unavailable().filter(|_| std::env::var_os("CI").is_none());
    if let Some(why) = &without_volume {
        eprintln!("the volume workload is left out: {why}");
        let others = georep_testkit::bench::WORKLOADS
            .iter()
            .filter(|w| **w != "volume");
        bench.args(others);
    }
    let out = bench.output().expect("running georep-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "georep-bench --quick failed ({}):\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    for limit in ["raw ssh pipe", "local cp -a"] {
        assert!(stdout.contains(limit), "no `{limit}` line:\n{stdout}");
    }
    let rows = ROWS
        .iter()
        .filter(|r| without_volume.is_none() || !r.starts_with("volume"));
    for row in rows {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row for `{row}`:\n{stdout}"));
        // Both tools measured: a ratio, not a dash.
        assert!(
            line.split_whitespace()
                .any(|w| w.ends_with('x') && w[..w.len() - 1].parse::<f64>().is_ok()),
            "row `{row}` has no georep/rsync ratio: {line}"
        );
    }
    // The table as JSON, and its chart: a bar (and its label) per ratio.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("results.json")).unwrap())
            .expect("results.json is JSON");
    let rows = json["rows"].as_array().expect("rows");
    let with_ratio: Vec<&str> = rows
        .iter()
        .filter(|r| r["ratio"].as_f64().is_some())
        .filter_map(|r| r["workload"].as_str())
        .collect();
    let expected = ROWS.len() - usize::from(without_volume.is_some());
    assert!(with_ratio.len() >= expected, "{json:#}");
    let svg = std::fs::read_to_string(out_dir.path().join("ratios.svg")).unwrap();
    for w in &with_ratio {
        assert!(svg.contains(w), "no bar label for {w} in ratios.svg");
    }
    // The runner removes its working directory.
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}
