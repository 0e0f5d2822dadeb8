//! Bad input and unreachable slaves: a clear error, a non-zero exit, never a
//! panic. Exit 1 is an operational error, 2 a usage error.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::thread;

use crate::common::{closed_port, Scenario};

#[test]
fn start_of_an_unknown_session_fails() {
    let s = Scenario::new();
    s.geo_rep(["start", "nosuch", &s.slave_url()])
        .fails_with(1)
        .stderr_mentions("nosuch");
}

#[test]
fn create_with_a_missing_brick_fails_naming_it() {
    let s = Scenario::new();
    let missing = s.path("no-such-brick");
    let args = s.create_args(&[&missing], &s.slave_url(), false);
    s.geo_rep(args)
        .fails_with(1)
        .stderr_mentions(&missing.display().to_string());
}

#[test]
fn create_refuses_a_slave_dir_that_is_not_empty_unless_forced() {
    let s = Scenario::new();
    fs::write(s.slave.join("already-here"), b"x").unwrap();
    s.create(false)
        .fails_with(1)
        .stderr_mentions("empty")
        .stderr_mentions(&s.slave.display().to_string());
    s.create(true).ok();
}

#[test]
fn create_against_a_closed_port_fails_naming_host_and_port() {
    let s = Scenario::new();
    let port = closed_port();
    let args = s.create_args_port(&[&s.brick], &s.slave_url(), false, port);
    s.geo_rep(args)
        .fails_with(1)
        .stderr_mentions("127.0.0.1")
        .stderr_mentions(&port.to_string());
}

#[test]
fn create_against_a_port_that_does_not_speak_ssh_fails() {
    let s = Scenario::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let args = s.create_args_port(&[&s.brick], &s.slave_url(), false, port);
    s.geo_rep(args)
        .fails_with(1)
        .stderr_mentions("127.0.0.1")
        .stderr_mentions(&port.to_string());
}

#[test]
fn start_fails_at_once_when_the_slave_is_unreachable() {
    let mut s = Scenario::new();
    s.create(false).ok();
    s.sshd.stop();
    s.start()
        .fails_with(1)
        .stderr_mentions("127.0.0.1")
        .stderr_mentions(&s.sshd.port().to_string());
    // The monitor started beside the pre-flight is gone again, and the
    // session is as it was.
    for row in s.status_json() {
        assert_eq!(row["status"], "Created", "{row}");
    }
    s.geo_rep(["stop", &s.vol, &s.slave_url()])
        .fails_with(1)
        .stderr_mentions("not running");
}

#[test]
fn a_malformed_slave_url_is_a_usage_error() {
    let s = Scenario::new();
    for bad in [
        "slavehost/srv/dr",
        "127.0.0.1:/srv/dr",
        "::/srv/dr",
        "root@127.0.0.1::",
    ] {
        let args = s.create_args(&[&s.brick], bad, false);
        s.geo_rep(args).usage_error().stderr_mentions(bad);
    }
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let s = Scenario::new();
    s.geo_rep(["frobnicate"]).usage_error();
}
