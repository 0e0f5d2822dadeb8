//! What a WAN link asks of georep: compressed file data (`compression`),
//! a bandwidth cap that holds (`bandwidth-limit`).

use std::fs;
use std::time::{Instant, SystemTime};

use georep::testkit::{assert_trees_equal, log_text, random_bytes};

use crate::common::Scenario;

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
        fs::write(s.brick.join(name), content).unwrap();
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
