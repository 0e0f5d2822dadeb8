//! What a WAN link asks of georep: compressed file data (`compression`),
//! a bandwidth cap that holds (`bandwidth-limit`), and large files that
//! resume where a dropped connection left them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use georep_testkit::{assert_trees_equal, log_text, random_bytes, signal, wait_for};
use rustix::process::Signal;

use crate::common::{self, Scenario};

const MIB: u64 = 1 << 20;

#[test]
fn zstd_ships_compressible_files_in_far_fewer_bytes_and_never_inflates_random_ones() {
    let s = Scenario::new();
    s.create(false).ok();
    let cfg = |k: &str, v: &str| s.geo_rep(["config", &s.vol, &s.slave_url(), k, v]).ok();
    cfg("compression", "none");
    s.start().ok();
    s.wait_active();
    let size = 12 * MIB as usize;

    // The same kind of content, once per setting (`compression` is live).
    let shipped = |name: &str, content: Vec<u8>| -> u64 {
        let before = s.bytes_sent();
        // Made outside the brick and moved in: a batch that read it half
        // written would ship it twice.
        let staged = s.path("staged");
        fs::write(&staged, content).unwrap();
        fs::rename(&staged, s.brick.join(name)).unwrap();
        let t = SystemTime::now();
        s.wait_synced_past(t);
        s.bytes_sent() - before
    };
    let raw = shipped("plain.log", log_text(size, 1));
    cfg("compression", "zstd");
    let zstd = shipped("packed.log", log_text(size, 2));
    assert_trees_equal(&s.brick, &s.slave);
    eprintln!("{size} bytes of log text: {raw} bytes sent raw, {zstd} with zstd");
    assert!(raw >= size as u64, "raw: {raw} bytes sent for {size}");
    assert!(
        zstd * 3 < raw,
        "zstd sent {zstd} bytes for what took {raw} raw (expected < a third)"
    );

    // Random data goes raw: no bigger than uncompressed, give or take the
    // frames around it.
    let noise = shipped("noise.bin", random_bytes(size, 3));
    assert_trees_equal(&s.brick, &s.slave);
    eprintln!("{size} random bytes: {noise} bytes sent with zstd");
    assert!(noise >= size as u64, "{noise} bytes for {size} random ones");
    assert!(
        noise < size as u64 + 64 * 1024,
        "random data was inflated: {noise} bytes sent for {size}"
    );
}

#[test]
fn bandwidth_limit_holds_the_link_to_its_rate() {
    let s = Scenario::new();
    s.create(false).ok();
    // 512 KiB/s; random data, so compression cannot shorten the transfer.
    s.geo_rep([
        "config",
        &s.vol,
        &s.slave_url(),
        "bandwidth-limit",
        "524288",
    ])
    .ok();
    s.start().ok();
    s.wait_active();
    let size = 4 * MIB as usize;
    let before = s.bytes_sent();
    let began = Instant::now();
    fs::write(s.brick.join("big.bin"), random_bytes(size, 11)).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    let took = began.elapsed();
    let sent = s.bytes_sent() - before;
    assert_trees_equal(&s.brick, &s.slave);
    eprintln!("{sent} bytes at a 512 KiB/s limit took {took:?}");
    assert!(sent >= size as u64, "only {sent} bytes sent for {size}");
    // 4 MiB at 512 KiB/s is 8 s, less a quarter-second burst: a lower
    // bound on the time is what a limit means (unlimited, this takes
    // about a second here).
    assert!(
        took.as_secs_f64() >= 6.0,
        "{sent} bytes arrived in {took:?} under a 512 KiB/s limit"
    );
}

/// The slave's partial files (`.georep.*.part`) in `dir`, with their sizes.
fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".georep.") && n.ends_with(".part")
        })
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .collect()
}

/// SIGKILLs every `geo-rep slave` process of the session; how many there were.
fn kill_slaves(s: &Scenario) -> usize {
    let killed = s
        .slave_pids()
        .into_iter()
        .filter(|&p| signal(p, Signal::KILL))
        .count();
    assert!(killed > 0, "no slave process to kill");
    killed
}

/// Starts the created session with `bandwidth-limit` bytes per second.
fn start_throttled(s: &Scenario, limit: u64) {
    s.geo_rep([
        "config",
        &s.vol,
        &s.slave_url(),
        "bandwidth-limit",
        &limit.to_string(),
    ])
    .ok();
    s.start().ok();
    s.wait_active();
}

#[test]
fn a_large_file_cut_off_mid_transfer_resumes_instead_of_restarting() {
    let s = Scenario::new();
    s.create(false).ok();
    // Slow enough to cut the transfer in the middle, on any machine.
    start_throttled(&s, 16 * MIB);
    let before = s.bytes_sent();

    // Made outside the brick and moved in, so no transfer starts on a
    // half-written file.
    let size = 160 * MIB;
    let staged = s.path("staged.bin");
    fs::write(&staged, random_bytes(size as usize, 21)).unwrap();
    fs::rename(&staged, s.brick.join("big.bin")).unwrap();
    let t = SystemTime::now();

    let cut_at = wait_for(Duration::from_secs(300), Duration::from_millis(20), || {
        partials(&s.slave)
            .into_iter()
            .find(|(_, len)| *len >= size / 2)
    })
    .unwrap_or_else(|e| {
        panic!(
            "no partial of half the file on the slave: {e}\n{}",
            s.diagnostics()
        )
    });
    let killed = kill_slaves(&s);
    eprintln!(
        "killed {killed} slave process(es) at a partial of {} bytes",
        cut_at.1
    );

    let killed_at = Instant::now();
    s.wait_synced_past_within(t, Duration::from_secs(600));
    eprintln!("synced {:?} after the kill", killed_at.elapsed());
    assert_trees_equal(&s.brick, &s.slave);
    assert!(partials(&s.slave).is_empty(), "{:?}", partials(&s.slave));
    // The cut-off attempt was never committed, so all that counts is the
    // resumed one: the part the slave did not hold yet (plus the one piece
    // sent again, see `slave::partial`).
    let sent = s.bytes_sent() - before;
    eprintln!(
        "{size} byte file, cut off at {}: {sent} bytes sent to finish it",
        cut_at.1
    );
    assert!(
        sent < size * 6 / 10,
        "{sent} bytes sent to finish a {size} byte file cut off at {} bytes: it restarted",
        cut_at.1
    );
    assert!(
        sent >= size / 4,
        "only {sent} bytes sent: the counter does not count the resumed transfer"
    );
    assert!(
        s.monitor_log().contains("resuming a partial transfer"),
        "{}",
        s.monitor_log()
    );
}

#[test]
fn a_slave_killed_mid_transfer_is_noticed_at_once_and_named_in_the_error() {
    let s = Scenario::new();
    s.create(false).ok();
    // Slow, so the kill lands in the middle of the file. The `timeout` is
    // left at its default (120 s), longer than the wait below: a worker
    // that noticed the dead slave only when a write timed out fails here.
    start_throttled(&s, 8 * MIB);

    let size = 64 * MIB;
    let staged = s.path("staged.bin");
    fs::write(&staged, random_bytes(size as usize, 22)).unwrap();
    fs::rename(&staged, s.brick.join("big.bin")).unwrap();
    let t = SystemTime::now();
    wait_for(Duration::from_secs(300), Duration::from_millis(20), || {
        partials(&s.slave)
            .into_iter()
            .find(|(_, len)| *len >= 4 * MIB)
    })
    .unwrap_or_else(|e| panic!("no partial on the slave: {e}\n{}", s.diagnostics()));
    kill_slaves(&s);

    // stime passes `t` only once the whole file is on the slave.
    let t_ns = common::nanos(t);
    let slave_file = s.slave.join("big.bin");
    wait_for(common::SYNC_TIMEOUT, common::POLL, || {
        let st = s.status_json();
        let past = st
            .iter()
            .all(|b| b["stime_ns"].as_i64().map(i128::from) > Some(t_ns));
        if past {
            let held = fs::metadata(&slave_file).map(|m| m.len()).unwrap_or(0);
            assert_eq!(
                held, size,
                "stime passed the batch before its file was whole"
            );
        }
        past.then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "not synced after the kill: {e}\n{}\n{}",
            s.monitor_log(),
            s.diagnostics()
        )
    });
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    let log = s.monitor_log();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("worker failed"))
        .collect();
    eprintln!("{}", failed.join("\n"));
    assert!(
        failed
            .iter()
            .any(|l| l.contains("the slave process on 127.0.0.1 was killed by signal KILL")),
        "the failure names the host and the signal: {failed:#?}"
    );
    assert!(
        !log.contains("stopped answering"),
        "the dead slave was only noticed by the timeout:\n{log}"
    );
    assert_eq!(s.status_json()[0]["status"], "Active");
}
