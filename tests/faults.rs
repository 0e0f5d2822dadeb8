//! Faults injected by the test itself: processes killed at random moments,
//! the slave host unreachable, the slave disk full, a corrupted journal.
//! Each ends with the slave converged to the master and no temporary files.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use georep_testkit::{assert_trees_equal, random_bytes, signal, wait_for, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustix::process::Signal;

use crate::common::Scenario;

// Generous: convergence after a crash loop replays a lot on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(100);

/// Temporary files the slave left behind (`.georep.*.tmp`), anywhere.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".georep.") && name.ends_with(".tmp") {
                found.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    found
}

/// Total size of the regular files under `root`.
fn tree_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

fn kill_all(pids: &[i32]) -> usize {
    pids.iter().filter(|&&p| signal(p, Signal::KILL)).count()
}

/// Writes, rewrites, renames and deletes files until told to stop; returns
/// how many files it created.
fn workload(brick: PathBuf, stop: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut created = 0;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) && i >= 3000 {
            break;
        }
        if i >= 6000 {
            break;
        }
        let dir = brick.join(format!("d{:02}", rng.gen_range(0..30)));
        fs::create_dir_all(&dir).unwrap();
        let size = match rng.gen_range(0..100) {
            0..=79 => rng.gen_range(0..4096),
            80..=97 => rng.gen_range(4096..300_000),
            _ => rng.gen_range(300_000..3_000_000),
        };
        let path = dir.join(format!("f{i:05}"));
        fs::write(&path, random_bytes(size, seed ^ i as u64)).unwrap();
        created += 1;
        match rng.gen_range(0..10) {
            0 => fs::remove_file(&path).unwrap(),
            1 => fs::rename(&path, dir.join(format!("r{i:05}"))).unwrap(),
            2 => fs::write(&path, random_bytes(size / 2 + 1, seed ^ 0xabc ^ i as u64)).unwrap(),
            _ => {}
        }
        if i % 500 == 499 {
            // A whole directory goes, with whatever is in it.
            let victim = brick.join(format!("d{:02}", rng.gen_range(0..30)));
            let _ = fs::remove_dir_all(victim);
        }
    }
    created
}

#[test]
fn killing_monitor_and_slave_at_random_moments_still_converges() {
    let s = Scenario::new();
    s.create_and_start(false);
    s.wait_active();

    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (brick, stop) = (s.brick.clone(), stop.clone());
        thread::spawn(move || workload(brick, stop, 7))
    };
    let mut rng = StdRng::seed_from_u64(42);
    let (mut monitor_kills, mut slave_kills, mut rounds) = (0, 0, 0);
    // Each kind is aimed at until it has its share: a slave exists only
    // while the monitor is connected, so blind coin flips could spend every
    // round on the monitor of a loaded machine.
    while (monitor_kills < 12 || slave_kills < 8) && rounds < 300 {
        rounds += 1;
        thread::sleep(Duration::from_millis(rng.gen_range(100..900)));
        let at_monitor = if monitor_kills >= 12 {
            false
        } else if slave_kills >= 8 {
            true
        } else {
            rng.gen_bool(0.5)
        };
        if at_monitor {
            let pids = s.monitor_pids();
            if kill_all(&pids) > 0 {
                monitor_kills += 1;
                wait_until(WAIT, POLL, || s.monitor_pids().is_empty()).unwrap();
                s.start().ok();
            }
        } else {
            slave_kills += kill_all(&s.slave_pids()).min(1);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let files = writer.join().unwrap();
    // A last restart after the last kill, in case the monitor is the one down.
    if s.monitor_pids().is_empty() {
        s.start().ok();
    }
    let t = SystemTime::now();
    s.wait_synced_past_within(t, WAIT);
    assert_trees_equal(&s.brick, &s.slave);
    let leftovers = temp_files(&s.slave);
    assert!(
        leftovers.is_empty(),
        "temporary files left on the slave: {leftovers:?}"
    );
    assert!(
        monitor_kills >= 5 && slave_kills >= 5,
        "too few kills to mean anything: {monitor_kills} monitor, {slave_kills} slave"
    );
    // What the replay cost, for comparing changes to the re-walks (a
    // figure, not an assertion: the kill moments decide how much replays).
    let st = s.status_json();
    let sum = |k: &str| st.iter().map(|b| b[k].as_u64().unwrap_or(0)).sum::<u64>();
    let brick_bytes = tree_bytes(&s.brick);
    println!(
        "crash loop: {monitor_kills} monitor kills, {slave_kills} slave kills, {files} files written, \
         converged {:.1} s after the workload began; shipped {} files ({} bytes) for a final tree \
         of {brick_bytes} bytes",
        began.elapsed().as_secs_f64(),
        sum("data_synced"),
        sum("bytes_sent"),
    );
}

#[test]
fn the_slave_host_down_for_a_while_is_faulty_then_resumes_without_resending() {
    let mut s = Scenario::new();
    fs::write(s.brick.join("before"), random_bytes(300_000, 1)).unwrap();
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);
    let sent_before = s.bytes_sent();

    // The host goes away: no daemon, and the established session dies too.
    s.sshd.stop();
    kill_all(&s.slave_pids());
    let new_bytes = 3 * 200_000;
    for i in 0..3 {
        fs::write(
            s.brick.join(format!("during-{i}")),
            random_bytes(200_000, 10 + i),
        )
        .unwrap();
    }
    let faulty = wait_for(WAIT, POLL, || {
        let st = s.status_json();
        (st[0]["status"] == "Faulty").then(|| st[0]["last_error"].to_string())
    })
    .unwrap_or_else(|e| panic!("never Faulty while the slave was down: {e}"));
    assert!(
        faulty.contains("127.0.0.1"),
        "the error names the host: {faulty}"
    );

    s.sshd.start_again().unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_eq!(s.status_json()[0]["status"], "Active");
    assert_trees_equal(&s.brick, &s.slave);
    let sent = s.bytes_sent() - sent_before;
    assert!(
        (new_bytes..new_bytes + 64 * 1024).contains(&sent),
        "after the outage {sent} bytes were sent for {new_bytes} bytes of new files: \
         what was already there must not be sent again"
    );
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "mounting a tmpfs at {} (the tests run as root)",
            at.display()
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_slave_disk_is_reported_holds_stime_and_recovers_when_space_is_freed() {
    let mut s = Scenario::new();
    // The slave root lives on a 4 MiB file system, next to a filler file.
    let fs_root = s.path("small-fs");
    let small = Tmpfs::mount(&fs_root, "4m");
    let root = fs_root.join("slave");
    fs::create_dir(&root).unwrap();
    s.slave = root.clone();
    fs::write(fs_root.join("filler"), vec![0u8; 2 << 20]).unwrap();

    s.create_and_start(false);
    s.wait_active();
    fs::write(s.brick.join("fits"), random_bytes(500_000, 1)).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);

    fs::write(s.brick.join("too-big"), random_bytes(3 << 20, 2)).unwrap();
    let t_full = SystemTime::now();
    let error = wait_for(WAIT, POLL, || {
        let st = s.status_json();
        (st[0]["status"] == "Faulty").then(|| st[0]["last_error"].to_string())
    })
    .unwrap_or_else(|e| panic!("a full disk never showed as Faulty: {e}"));
    assert!(
        error.contains("space") && error.contains(&root.display().to_string()),
        "the error says the disk is full and names the slave path: {error}"
    );
    let st = s.status_json();
    let stime = st[0]["stime_ns"].as_i64().unwrap() as i128;
    assert!(
        stime < crate::common::nanos(t_full),
        "stime must not pass a change that is not on the slave"
    );
    assert!(!root.join("too-big").exists());
    assert!(temp_files(&root).is_empty(), "nothing partial stays behind");

    // Space comes back: replication resumes by itself.
    fs::remove_file(fs_root.join("filler")).unwrap();
    s.wait_synced_past(t_full);
    assert_trees_equal(&s.brick, &s.slave);
    drop(s);
    drop(small);
}

#[test]
fn a_corrupted_journal_file_is_detected_and_healed() {
    let s = Scenario::new();
    fs::write(s.brick.join("a"), b"a").unwrap();
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);
    s.stop().ok();

    // Changes while stopped, and a journal file that claims to describe
    // them but was damaged on disk.
    fs::write(s.brick.join("b"), b"b").unwrap();
    let journal = fs::read_dir(s.home.join("sessions"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("journal"))
        .find(|p| p.exists())
        .expect("a journal directory");
    let brick_dir = fs::read_dir(&journal)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let now = georep::session::Stime::now();
    let file = georep::changelog::write_closed(
        &brick_dir,
        now,
        georep::session::Stime::from_nanos(now.nanos() + 1),
        &[georep::changelog::Record::Create("b".parse().unwrap())],
    )
    .unwrap();
    let mut bytes = fs::read(&file.path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&file.path, bytes).unwrap();

    let t = SystemTime::now();
    s.start().ok();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
    let log = s.monitor_log();
    let name = file
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        log.contains(&name) && log.contains("Hybrid Crawl"),
        "the log names the corrupt file and the healing crawl:\n{log}"
    );
    assert!(
        !file.path.exists(),
        "the corrupt file is purged once healed"
    );
}

#[test]
fn a_hung_slave_is_given_up_after_the_timeout_and_replaced() {
    let s = Scenario::new();
    s.create(false).ok();
    s.geo_rep(["config", &s.vol, &s.slave_url(), "timeout", "3"])
        .ok();
    let t = SystemTime::now();
    s.start().ok();
    s.wait_synced_past(t);

    // The slave process freezes: the connection stays up, nothing answers.
    let frozen = s.slave_pids();
    assert!(!frozen.is_empty(), "a slave process serves the session");
    for &p in &frozen {
        signal(p, Signal::STOP);
    }
    fs::write(s.brick.join("while-frozen"), random_bytes(100_000, 3)).unwrap();
    let error = wait_for(WAIT, POLL, || {
        let st = s.status_json();
        (st[0]["status"] == "Faulty").then(|| st[0]["last_error"].to_string())
    })
    .unwrap_or_else(|e| panic!("a frozen slave was never given up: {e}"));
    assert!(
        error.contains("3 s"),
        "the error says the slave stopped answering: {error}"
    );

    // The worker reconnects to a fresh slave process and catches up; the
    // frozen one, woken up, must not put anything stale in place.
    let t = SystemTime::now();
    s.wait_synced_past(t);
    for &p in &frozen {
        signal(p, Signal::CONT);
    }
    wait_until(WAIT, POLL, || {
        frozen.iter().all(|p| !s.slave_pids().contains(p))
    })
    .unwrap_or_else(|e| panic!("the woken slave process did not exit: {e}"));
    assert_trees_equal(&s.brick, &s.slave);
    assert!(temp_files(&s.slave).is_empty());
}
