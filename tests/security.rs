//! What the session key may do on the slave (only run the forced command),
//! and what happens when the slave's host key changes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use georep_testkit::{run_with_timeout, wait_until};

use crate::common::{forwarding_works, Scenario, COMMAND_TIMEOUT};

#[test]
fn session_key_is_private_and_installed_with_a_forced_command_and_restrict() {
    let s = Scenario::new();
    s.create(false).ok();
    let key = s.session_key();
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", key.display());

    let ak = fs::read_to_string(s.sshd.authorized_keys()).unwrap();
    let session_lines: Vec<&str> = ak.lines().filter(|l| l.contains("command=")).collect();
    assert_eq!(session_lines.len(), 1, "authorized_keys:\n{ak}");
    let line = session_lines[0];
    assert!(line.contains("restrict"), "{line}");
    assert!(line.contains("slave --root"), "{line}");
    assert!(line.contains(&s.slave.display().to_string()), "{line}");
}

#[test]
fn the_session_key_cannot_run_a_shell_command() {
    let s = Scenario::new();
    s.create(false).ok();
    let key = s.session_key();

    // Control: the operator's own key does run it.
    let out = run_with_timeout(
        s.sshd
            .ssh_command(s.sshd.operator_key())
            .arg("cat /etc/passwd"),
        COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(out.stdout_str().contains("root:"), "control failed\n{out}");

    let out = run_with_timeout(
        s.sshd.ssh_command(&key).arg("cat /etc/passwd"),
        COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(
        !out.stdout_str().contains("root:"),
        "the session key ran a shell command\n{out}"
    );
    let log = s.sshd.log();
    assert!(
        log.contains("forced-command"),
        "sshd did not run a forced command\n{log}"
    );
}

#[test]
fn the_session_key_cannot_forward_ports() {
    let s = Scenario::new();
    s.create(false).ok();
    let key = s.session_key();

    // Control: the same sshd forwards for the unrestricted operator key.
    assert!(forwarding_works(&s.sshd, s.sshd.operator_key()));
    assert!(!forwarding_works(&s.sshd, &key), "{}", s.diagnostics());
    // And it was the key's restriction that refused it, after a successful
    // login.
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        s.sshd.log().contains("refused local port forward")
    })
    .unwrap_or_else(|_| panic!("sshd never refused a forward\n{}", s.diagnostics()));
}

#[test]
fn the_session_key_gets_no_pty() {
    let s = Scenario::new();
    s.create(false).ok();
    let key = s.session_key();

    let control = run_with_timeout(
        s.sshd
            .ssh_command(s.sshd.operator_key())
            .args(["-tt", "tty"]),
        COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(
        control.stdout_str().contains("/dev/pts"),
        "control failed\n{control}"
    );

    let out = run_with_timeout(
        s.sshd.ssh_command(&key).args(["-tt", "tty"]),
        COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(!out.stdout_str().contains("/dev/pts"), "{out}");
    assert!(
        out.stderr_str().contains("PTY allocation request failed"),
        "{out}"
    );
}

#[test]
fn a_changed_host_key_makes_start_fail_naming_host_and_both_fingerprints() {
    let mut s = Scenario::new();
    s.create(false).ok();
    let old = s.sshd.host_key_fingerprint().unwrap();
    s.sshd.restart_with_new_host_key().unwrap();
    let new = s.sshd.host_key_fingerprint().unwrap();
    assert_ne!(old, new);

    let run = s.start().fails_with(1).stderr_mentions("127.0.0.1");
    let err = run.stderr();
    assert!(
        err.contains(&old),
        "stderr lacks the recorded fingerprint {old}\n{}",
        run.0
    );
    assert!(
        err.contains(&new),
        "stderr lacks the new fingerprint {new}\n{}",
        run.0
    );
}

#[test]
fn the_session_key_cannot_run_sh_c_id() {
    let s = Scenario::new();
    s.create(false).ok();
    let out = run_with_timeout(
        s.sshd.ssh_command(&s.session_key()).arg("sh -c id"),
        COMMAND_TIMEOUT,
    )
    .unwrap();
    assert!(
        !out.stdout_str().contains("uid="),
        "the session key ran `sh -c id`\n{out}"
    );
}

/// `known_hosts` line for the scenario's sshd with `key` (an OpenSSH public
/// key line).
fn known_hosts_line(s: &Scenario, key: &str) -> String {
    let mut parts = key.split_whitespace();
    let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
    format!("[127.0.0.1]:{} {kind} {blob}\n", s.sshd.port())
}

#[test]
fn create_checks_the_slave_key_against_the_operators_known_hosts() {
    let s = Scenario::new();
    // The operator's known_hosts says the slave has another key (here: the
    // operator's own public key plays the impostor's).
    let other = fs::read_to_string(format!("{}.pub", s.sshd.operator_key().display())).unwrap();
    let ssh_dir = s.path(".ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    fs::write(ssh_dir.join("known_hosts"), known_hosts_line(&s, &other)).unwrap();
    let run = s.create(false).fails_with(1).stderr_mentions("known_hosts");
    let err = run.stderr();
    let presented = s.sshd.host_key_fingerprint().unwrap();
    assert!(
        err.contains(&presented),
        "names the presented key\n{}",
        run.0
    );
    assert!(
        err.contains("line 1"),
        "names the known_hosts line\n{}",
        run.0
    );
    assert!(
        s.session_key_lines().is_empty(),
        "nothing was installed on the slave"
    );

    // With the right key listed, create says it matched.
    fs::write(
        ssh_dir.join("known_hosts"),
        known_hosts_line(&s, &s.sshd.host_key_pub()),
    )
    .unwrap();
    let run = s.create(false).ok();
    assert!(run.stdout().contains("matches"), "{}", run.0);
}
