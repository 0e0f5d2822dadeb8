//! Operating a session like GlusterFS geo-replication (issue 5): `config`,
//! checkpoints and `checkpoint wait` (and the cron example that uses them),
//! `pause`/`resume`, `delete [reset-sync-time]`, `start force`, `status
//! detail` and `--json`, and several sessions on one node.

use std::fs;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use georep_testkit::{assert_trees_equal, run_with_timeout};
use serde_json::Value;

use crate::common::{Scenario, COMMAND_TIMEOUT, GEO_REP};

/// A check of one JSON value's type.
type Check<'a> = &'a dyn Fn(&Value) -> bool;

fn settle() -> SystemTime {
    // Changes made before this instant must be on the slave once stime
    // passes it.
    SystemTime::now()
}

#[test]
fn config_lists_gets_sets_and_resets_with_validation() {
    let s = Scenario::new();
    s.create(false).ok();
    let (vol, slave) = (s.vol.as_str(), s.slave_url());
    let cfg = |args: &[&str]| {
        let mut a = vec!["config", vol, slave.as_str()];
        a.extend_from_slice(args);
        s.geo_rep(a)
    };

    let list = cfg(&[]).ok().stdout();
    let header = list.lines().find(|l| l.starts_with("KEY")).unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["KEY", "VALUE", "DEFAULT", "APPLIES"]
    );
    for key in [
        "checkpoint",
        "rollover-time",
        "changelog-batch-size",
        "sync-jobs",
        "ignore-deletes",
        "sync-xattrs",
        "sync-acls",
        "ssh-port",
        "timeout",
        "log-level",
        "remote-command",
        "exclude",
    ] {
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("config listing lacks {key}\n{list}"));
        let applies = [
            "live",
            "reload",
            "next start",
            "at create",
            "not yet applied",
        ];
        assert!(
            applies.iter().any(|a| line.ends_with(a)),
            "{key}: no APPLIES column: {line}"
        );
    }
    let sync_jobs = list.lines().find(|l| l.starts_with("sync-jobs")).unwrap();
    assert!(sync_jobs.ends_with("next start"), "{sync_jobs}");
    let sync_acls = list.lines().find(|l| l.starts_with("sync-acls")).unwrap();
    assert!(sync_acls.ends_with("live"), "{sync_acls}");

    assert_eq!(cfg(&["timeout"]).ok().stdout().trim(), "120");
    cfg(&["timeout", "30"]).ok();
    assert_eq!(cfg(&["timeout"]).ok().stdout().trim(), "30");

    // Refused values name the key and leave the setting as it was.
    for (args, needle) in [
        (vec!["timeout", "0"], "timeout"),
        (vec!["timeout", "soon"], "timeout"),
        (vec!["ssh-port", "70000"], "ssh-port"),
        (vec!["changelog-batch-size", "-1"], "changelog-batch-size"),
        (vec!["ignore-deletes", "perhaps"], "ignore-deletes"),
        (vec!["exclude", "[oops"], "exclude"),
        (vec!["no-such-option", "1"], "no-such-option"),
        (vec!["no-such-option"], "no-such-option"),
        (vec!["!no-such-option"], "no-such-option"),
        (vec!["checkpoint", "yesterday"], "checkpoint"),
    ] {
        cfg(&args).fails_with(2).stderr_mentions(needle);
    }
    cfg(&["remote-command", "/bin/sh"])
        .fails_with(2)
        .stderr_mentions("fixed at create");
    assert_eq!(cfg(&["timeout"]).ok().stdout().trim(), "30");

    cfg(&["!timeout"]).ok();
    assert_eq!(cfg(&["timeout"]).ok().stdout().trim(), "120");

    cfg(&["checkpoint", "1700000000"]).ok();
    assert_eq!(cfg(&["checkpoint"]).ok().stdout().trim(), "1700000000");
    cfg(&["!checkpoint"]).ok();
    assert_eq!(cfg(&["checkpoint"]).ok().stdout().trim(), "");

    s.geo_rep(["config", "nosuch", &slave])
        .fails_with(1)
        .stderr_mentions("nosuch");
}

#[test]
fn exclude_and_ignore_deletes_apply_to_a_running_session() {
    let s = Scenario::new();
    s.create_and_start(false);
    let cfg = |k: &str, v: &str| s.geo_rep(["config", &s.vol, &s.slave_url(), k, v]).ok();
    cfg("exclude", "*.tmp,cache");
    cfg("ignore-deletes", "true");

    let b = &s.brick;
    fs::write(b.join("kept.txt"), b"kept").unwrap();
    fs::write(b.join("scratch.tmp"), b"not replicated").unwrap();
    fs::create_dir_all(b.join("sub/cache")).unwrap();
    fs::write(b.join("sub/cache/blob"), b"not replicated").unwrap();
    fs::write(b.join("sub/doc"), b"replicated").unwrap();
    fs::write(b.join("doomed"), b"stays on the slave").unwrap();
    s.wait_synced_past(settle());
    assert!(s.slave.join("kept.txt").is_file());
    assert!(s.slave.join("sub/doc").is_file());
    assert!(s.slave.join("doomed").is_file());
    assert!(!s.slave.join("scratch.tmp").exists());
    assert!(!s.slave.join("sub/cache").exists());

    fs::remove_file(b.join("doomed")).unwrap();
    fs::remove_file(b.join("kept.txt")).unwrap();
    s.wait_synced_past(settle());
    assert!(s.slave.join("doomed").is_file(), "ignore-deletes kept it");
    assert!(s.slave.join("kept.txt").is_file(), "ignore-deletes kept it");

    // Back to the defaults: deletions replicate again.
    s.geo_rep(["config", &s.vol, &s.slave_url(), "!ignore-deletes"])
        .ok();
    fs::write(b.join("later"), b"x").unwrap();
    fs::remove_file(b.join("later")).unwrap();
    fs::write(b.join("later2"), b"x").unwrap();
    s.wait_synced_past(settle());
    assert!(s.slave.join("later2").is_file());
    assert!(!s.slave.join("later").exists());
}

#[test]
fn checkpoint_wait_returns_once_the_data_is_on_the_slave() {
    let s = Scenario::new();
    s.create_and_start(false);
    let slave = s.slave_url();
    fs::create_dir_all(s.brick.join("d")).unwrap();
    fs::write(s.brick.join("d/before-checkpoint"), b"must be there").unwrap();
    s.geo_rep(["config", &s.vol, &slave, "checkpoint", "now"])
        .ok();
    let waited = s
        .geo_rep(["checkpoint", "wait", &s.vol, &slave, "--timeout", "90"])
        .ok();
    assert!(waited.stdout().contains("completed"), "{}", waited.0);
    assert_eq!(
        fs::read(s.slave.join("d/before-checkpoint")).unwrap(),
        b"must be there"
    );

    let rows = s.status_json();
    let r = &rows[0];
    assert_eq!(r["checkpoint_completed"], true, "{r}");
    let cp = r["checkpoint_epoch"].as_i64().unwrap();
    let done = r["checkpoint_completion_epoch"].as_i64().unwrap();
    assert!(done >= cp, "{r}");
    assert!(r["stime_ns"].as_i64().unwrap() / 1_000_000_000 >= cp, "{r}");

    let table = s
        .geo_rep(["status", &s.vol, &slave, "detail"])
        .ok()
        .stdout();
    let row = table.lines().nth(3).unwrap();
    assert!(
        row.contains("Yes"),
        "CHECKPOINT COMPLETED should be Yes\n{table}"
    );

    // A new checkpoint is not completed until stime passes it again: with
    // the session paused stime cannot move, so it stays open; once resumed,
    // what was written before it is on the slave when the wait returns.
    s.geo_rep(["pause", &s.vol, &slave]).ok();
    fs::write(s.brick.join("after"), b"x").unwrap();
    s.geo_rep(["config", &s.vol, &slave, "checkpoint", "now"])
        .ok();
    let r = &s.status_json()[0];
    assert_eq!(r["checkpoint_completed"], false, "{r}");
    s.geo_rep(["resume", &s.vol, &slave]).ok();
    s.geo_rep(["checkpoint", "wait", &s.vol, &slave, "--timeout", "90"])
        .ok();
    assert_eq!(fs::read(s.slave.join("after")).unwrap(), b"x");
}

#[test]
fn checkpoint_wait_fails_on_timeout_and_on_faulty_while_the_slave_is_down() {
    let mut s = Scenario::new();
    s.create(false).ok();
    let slave = s.slave_url();
    s.geo_rep(["checkpoint", "wait", &s.vol, &slave, "--timeout", "1"])
        .fails_with(1)
        .stderr_mentions("no checkpoint");
    s.geo_rep(["config", &s.vol, &slave, "checkpoint", "now"])
        .ok();
    s.geo_rep(["checkpoint", "wait", &s.vol, &slave, "--timeout", "1"])
        .fails_with(1)
        .stderr_mentions("not started");

    // The slave is down: plain start refuses, start force runs anyway and
    // the worker is Faulty.
    fs::write(s.brick.join("waiting"), b"for the slave").unwrap();
    s.sshd.stop();
    s.start().fails_with(1);
    s.geo_rep(["start", &s.vol, &slave, "force"]).ok();
    let rows = s.wait_status("a Faulty brick with its error", |rows| {
        rows.iter()
            .all(|r| r["status"] == "Faulty" && r["last_error"].is_string())
    });
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains(&s.sshd.port().to_string()),
        "{rows:?}"
    );
    let timed_out = s
        .geo_rep([
            "checkpoint",
            "wait",
            &s.vol,
            &slave,
            "--timeout",
            "2",
            "--faulty-grace",
            "3600",
        ])
        .fails_with(1)
        .stderr_mentions("not completed after 2 s");
    assert_eq!(
        timed_out.stderr().trim().lines().count(),
        1,
        "{}",
        timed_out.0
    );
    s.geo_rep([
        "checkpoint",
        "wait",
        &s.vol,
        &slave,
        "--timeout",
        "120",
        "--faulty-grace",
        "1",
    ])
    .fails_with(1)
    .stderr_mentions("Faulty");

    // The slave comes back: the checkpoint completes.
    s.sshd.start_again().unwrap();
    s.geo_rep(["checkpoint", "wait", &s.vol, &slave, "--timeout", "120"])
        .ok();
    assert!(s.slave.join("waiting").is_file());
}

/// Runs the job of `config/georep-checkpoint.cron.example` as cron would:
/// `/bin/sh -c` on the job line, only the crontab's variables in the
/// environment (ours substituted for the session's), no TTY, stdin closed.
#[test]
fn the_cron_example_snapshots_after_the_checkpoint() {
    let s = Scenario::new();
    s.create_and_start(false);
    fs::create_dir_all(s.brick.join("nightly")).unwrap();
    fs::write(s.brick.join("nightly/report"), b"written before the job").unwrap();

    let crontab = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/georep-checkpoint.cron.example"),
    )
    .unwrap();
    let snap = s.path("snapshot");
    let ours: Vec<(&str, String)> = vec![
        ("GEOREP_HOME", s.home.display().to_string()),
        ("GEO_REP", GEO_REP.to_owned()),
        ("VOL", s.vol.clone()),
        ("SLAVE", s.slave_url()),
        ("TIMEOUT", "90".into()),
        (
            "SNAPSHOT",
            format!("cp -a {} {}", s.slave.display(), snap.display()),
        ),
    ];
    let mut cmd = Command::new("/bin/sh");
    cmd.env_clear().stdin(Stdio::null());
    let mut job = None;
    for line in crontab.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line
            .split_once('=')
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        {
            let value = ours
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| value.to_owned());
            cmd.env(name, value);
            continue;
        }
        // m h dom mon dow user command
        let mut rest = line;
        for _ in 0..6 {
            rest = rest.trim_start();
            rest = &rest[rest.find(char::is_whitespace).unwrap()..];
        }
        job = Some(rest.trim().to_owned());
    }
    for (name, _) in &ours {
        assert!(
            crontab.contains(&format!("\n{name}=")),
            "crontab lacks {name}"
        );
    }
    let job = job.expect("a job line in the crontab");
    assert!(
        job.contains("checkpoint now") && job.contains("checkpoint wait"),
        "{job}"
    );
    cmd.arg("-c").arg(&job);
    let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT).unwrap();
    assert!(out.success(), "cron job failed\n{out}");
    assert_eq!(
        fs::read(snap.join("nightly/report")).unwrap(),
        b"written before the job",
        "the snapshot was taken before the data arrived"
    );
}

#[test]
fn pause_keeps_recording_and_resume_ships_everything() {
    let s = Scenario::new();
    s.create_and_start(false);
    let slave = s.slave_url();
    s.geo_rep(["resume", &s.vol, &slave])
        .fails_with(1)
        .stderr_mentions("not paused");
    s.geo_rep(["pause", &s.vol, &slave]).ok();
    s.geo_rep(["pause", &s.vol, &slave])
        .fails_with(1)
        .stderr_mentions("already paused");
    s.wait_status("Paused", |rows| {
        rows.iter().all(|r| r["status"] == "Paused")
    });

    let b = &s.brick;
    fs::create_dir_all(b.join("while-paused/deep")).unwrap();
    for i in 0..20 {
        fs::write(
            b.join(format!("while-paused/deep/f{i}")),
            vec![i as u8; 1000],
        )
        .unwrap();
    }
    fs::write(b.join("top"), b"top").unwrap();
    // The journal records while paused: the work shows as pending.
    let rows = s.wait_status("pending work while paused", |rows| {
        rows.iter().all(|r| {
            r["status"] == "Paused"
                && r["pending_entry"].as_u64().is_some_and(|n| n >= 22)
                && r["pending_data"].as_u64().is_some_and(|n| n >= 1)
        })
    });
    assert_eq!(rows[0]["pending_exact"], true);
    assert!(!s.slave.join("top").exists(), "shipped while paused");

    let t = settle();
    s.geo_rep(["resume", &s.vol, &slave]).ok();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
    let rows = s.wait_status("no pending work", |rows| {
        rows.iter()
            .all(|r| r["pending_entry"] == 0 && r["pending_data"] == 0)
    });
    assert_eq!(rows[0]["status"], "Active");
    // stop works from paused too
    s.geo_rep(["pause", &s.vol, &slave]).ok();
    s.stop().ok();
}

#[test]
fn delete_removes_state_and_the_slave_key_and_keeps_stime_unless_reset() {
    let s = Scenario::new();
    let slave = s.slave_url();
    let key = s.sshd.operator_key().display().to_string();
    s.create_and_start(false);
    assert_eq!(s.session_key_lines().len(), 1);
    fs::write(s.brick.join("f"), b"x").unwrap();
    s.wait_synced_past(settle());

    s.geo_rep(["delete", &s.vol, &slave, "--identity", &key])
        .fails_with(1)
        .stderr_mentions("stop it first");
    s.stop().ok();
    let stime = s.status_json()[0]["stime_ns"].as_i64().unwrap();
    let sessions_dir = s.home.join("sessions");
    assert_eq!(fs::read_dir(&sessions_dir).unwrap().count(), 1);

    let out = s
        .geo_rep(["delete", &s.vol, &slave, "--identity", &key])
        .ok();
    assert!(
        out.stdout().contains("removed the session key"),
        "{}",
        out.0
    );
    assert!(
        s.session_key_lines().is_empty(),
        "session key still authorized"
    );
    assert!(
        fs::read_to_string(s.sshd.authorized_keys())
            .unwrap()
            .contains("georep-test-operator"),
        "the operator's own key must stay"
    );
    assert_eq!(fs::read_dir(&sessions_dir).unwrap().count(), 0);
    s.geo_rep(["status", &s.vol, &slave])
        .fails_with(1)
        .stderr_mentions("no session");

    // Re-created into the slave directory that holds the data: it resumes
    // from the kept stime.
    s.create(true).ok();
    assert_eq!(s.status_json()[0]["stime_ns"].as_i64(), Some(stime));

    // reset-sync-time: the next session starts from nothing (full Hybrid
    // Crawl).
    s.geo_rep([
        "delete",
        &s.vol,
        &slave,
        "reset-sync-time",
        "--identity",
        &key,
    ])
    .ok();
    s.create(true).ok();
    assert_eq!(s.status_json()[0]["stime_ns"], Value::Null);
    s.start().ok();
    s.wait_active();
    assert_trees_equal(&s.brick, &s.slave);
}

#[test]
fn delete_with_the_slave_unreachable_still_deletes_and_says_what_is_left() {
    let mut s = Scenario::new();
    let slave = s.slave_url();
    s.create(false).ok();
    s.sshd.stop();
    let out = s
        .geo_rep([
            "delete",
            &s.vol,
            &slave,
            "--identity",
            &s.sshd.operator_key().display().to_string(),
        ])
        .ok();
    assert!(
        out.stderr().contains("warning") && out.stderr().contains("by hand"),
        "{}",
        out.0
    );
    s.geo_rep(["status", &s.vol, &slave]).fails_with(1);
}

#[test]
fn status_detail_table_has_the_glusterfs_columns_in_order() {
    let s = Scenario::new();
    s.create_and_start(false);
    let golden: Vec<&str> = include_str!("golden/status-detail-columns.txt")
        .lines()
        .collect();
    let table = s
        .geo_rep(["status", &s.vol, &s.slave_url(), "detail"])
        .ok()
        .stdout();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "", "{table}");
    let header = lines[1];
    // Columns are separated by at least two spaces; names have single ones.
    let names: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(names, golden, "{table}");
    assert!(lines[2].chars().all(|c| c == '-') && lines[2].len() >= header.len());
    // Every cell of the row starts where its column's name starts.
    let row = lines[3];
    for name in &golden {
        let at = header.find(name).unwrap();
        assert!(
            at == 0 || (row.as_bytes()[at - 1] == b' ' && row.as_bytes()[at] != b' '),
            "column {name:?} misaligned\n{table}"
        );
    }
    // Without detail, the first nine columns only.
    let plain = s.geo_rep(["status", &s.vol, &s.slave_url()]).ok().stdout();
    let names: Vec<&str> = plain
        .lines()
        .nth(1)
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(names, golden[..9]);
}

#[test]
fn status_json_schema() {
    let s = Scenario::new();
    s.create_and_start(false);
    fs::write(s.brick.join("x"), b"x").unwrap();
    s.wait_synced_past(settle());
    let rows = s.status_json();
    assert_eq!(rows.len(), 1);
    let r = rows[0].as_object().unwrap();
    let string = |v: &Value| v.is_string();
    let opt_string = |v: &Value| v.is_string() || v.is_null();
    let int = |v: &Value| v.is_u64();
    let opt_int = |v: &Value| v.is_i64() || v.is_null();
    let number = |v: &Value| v.is_number() || v.is_null();
    let boolean = |v: &Value| v.is_boolean();
    let progress = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(|p| {
                p["started"].is_string()
                    && p["started_epoch"].is_i64()
                    && (p["finished"].is_string() || p["finished"].is_null())
                    && p["running"].is_boolean()
                    && p["files_synced"].is_u64()
                    && p["bytes_sent"].is_u64()
                    && p["files_per_second"].is_number()
                    && p["bytes_per_second"].is_number()
            })
    };
    let schema: Vec<(&str, Check)> = vec![
        ("master_node", &string),
        ("master_vol", &string),
        ("master_brick", &string),
        ("slave_user", &string),
        ("slave", &string),
        ("slave_node", &string),
        ("status", &string),
        ("crawl_status", &string),
        ("last_synced", &opt_string),
        ("last_synced_epoch", &opt_int),
        ("stime_ns", &opt_int),
        ("lag_seconds", &number),
        ("last_error", &opt_string),
        ("bytes_sent", &int),
        ("entries_synced", &int),
        ("data_synced", &int),
        ("meta_synced", &int),
        ("failures", &int),
        ("pending_entry", &opt_int),
        ("pending_data", &opt_int),
        ("pending_meta", &opt_int),
        ("pending_exact", &boolean),
        ("checkpoint_time", &opt_string),
        ("checkpoint_epoch", &opt_int),
        ("checkpoint_completed", &boolean),
        ("checkpoint_completion_time", &opt_string),
        ("checkpoint_completion_epoch", &opt_int),
        ("crawl_progress", &progress),
        ("subvolume", &opt_string),
        ("arbiter", &boolean),
        ("last_seen", &opt_string),
    ];
    for (key, ok) in &schema {
        let v = r
            .get(*key)
            .unwrap_or_else(|| panic!("status --json lacks {key}: {r:?}"));
        assert!(ok(v), "{key} has the wrong type: {v}");
    }
    let documented: Vec<&str> = schema.iter().map(|(k, _)| *k).collect();
    let mut extra: Vec<&String> = r
        .keys()
        .filter(|k| !documented.contains(&k.as_str()))
        .collect();
    extra.sort();
    assert!(extra.is_empty(), "undocumented keys {extra:?}");

    // The README documents every key.
    let readme =
        fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for key in documented {
        assert!(
            readme.contains(&format!("`{key}`")),
            "README does not document {key}"
        );
    }

    // The first sync was a Hybrid Crawl, and it finished.
    let p = &r["crawl_progress"];
    assert_eq!(p["running"], false, "{p}");
    // Epoch and RFC 3339 say the same.
    let epoch = r["last_synced_epoch"].as_i64().unwrap();
    assert_eq!(
        epoch,
        r["stime_ns"].as_i64().unwrap().div_euclid(1_000_000_000)
    );
    assert_eq!(r["pending_entry"], 0);
}

#[test]
fn one_volume_fans_out_to_two_slaves() {
    let s = Scenario::new();
    let slave2 = s.path("slave2");
    fs::create_dir(&slave2).unwrap();
    let url2 = s.slave_url_of(&slave2);
    s.create_and_start(false);
    s.create_other(&s.vol, &[&s.brick], &url2, false).ok();
    s.geo_rep(["start", &s.vol, &url2]).ok();

    fs::create_dir_all(s.brick.join("a/b")).unwrap();
    fs::write(s.brick.join("a/b/one"), b"1").unwrap();
    fs::write(s.brick.join("two"), vec![7u8; 300_000]).unwrap();
    let t = settle();
    s.wait_synced_past(t);
    s.wait_synced_past_of(&s.vol, &url2, t);
    assert_trees_equal(&s.brick, &s.slave);
    assert_trees_equal(&s.brick, &slave2);

    // Each session has its own rows; stopping one leaves the other running.
    let all = s.geo_rep(["status", "--json"]).ok().stdout();
    let all: Vec<Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(all.len(), 2);
    s.geo_rep(["stop", &s.vol, &url2]).ok();
    fs::write(s.brick.join("three"), b"3").unwrap();
    s.wait_synced_past(settle());
    assert!(s.slave.join("three").is_file());
    assert_eq!(s.status_json_of(&s.vol, &url2)[0]["status"], "Stopped");
}

#[test]
fn two_volumes_on_one_node_have_their_own_rows() {
    let s = Scenario::new();
    let brick2 = s.path("brick2");
    let slave2 = s.path("slave2");
    fs::create_dir(&brick2).unwrap();
    fs::create_dir(&slave2).unwrap();
    let url2 = s.slave_url_of(&slave2);
    s.create_and_start(false);
    s.create_other("gv1", &[&brick2], &url2, false).ok();
    s.geo_rep(["start", "gv1", &url2]).ok();

    fs::write(s.brick.join("of-gv0"), b"0").unwrap();
    fs::write(brick2.join("of-gv1"), b"1").unwrap();
    let t = settle();
    s.wait_synced_past(t);
    s.wait_synced_past_of("gv1", &url2, t);
    assert_trees_equal(&s.brick, &s.slave);
    assert_trees_equal(&brick2, &slave2);
    assert!(!s.slave.join("of-gv1").exists() && !slave2.join("of-gv0").exists());

    let table = s.geo_rep(["status"]).ok().stdout();
    let rows: Vec<&str> = table.lines().skip(3).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].contains("gv0") && rows[0].contains(&s.brick.display().to_string()));
    assert!(rows[1].contains("gv1") && rows[1].contains(&brick2.display().to_string()));
    let only = s.status_json_of("gv1", &url2);
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["master_vol"], "gv1");
    // A checkpoint belongs to one session.
    s.geo_rep(["config", "gv1", &url2, "checkpoint", "now"])
        .ok();
    assert_eq!(s.status_json()[0]["checkpoint_epoch"], Value::Null);
    s.geo_rep(["checkpoint", "wait", "gv1", &url2, "--timeout", "90"])
        .ok();
}

#[test]
fn pause_and_delete_refuse_what_makes_no_sense() {
    let s = Scenario::new();
    s.create(false).ok();
    let slave = s.slave_url();
    s.geo_rep(["pause", &s.vol, &slave])
        .fails_with(1)
        .stderr_mentions("not started");
    s.geo_rep(["delete", &s.vol, &slave, "later"]).usage_error();
    s.geo_rep(["config", &s.vol, &slave, "timeout", "5", "extra"])
        .usage_error();
}
