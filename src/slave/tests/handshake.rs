//! The greeting: version, root, and what may come first.

use super::*;

#[test]
fn hello_reports_root_and_emptiness() {
    let dir = tempfile::tempdir().unwrap();
    let (r, replies) = run_raw(dir.path(), &wire(&[hello()]));
    r.unwrap();
    let Reply::Hello {
        protocol,
        root,
        root_empty,
        agent_version,
    } = &replies[0]
    else {
        panic!("{replies:?}")
    };
    assert_eq!(*protocol, PROTOCOL_VERSION);
    assert_eq!(root, &dir.path().display().to_string());
    assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
    assert!(root_empty);
    fs::write(dir.path().join("x"), b"").unwrap();
    let (_, replies) = run_raw(dir.path(), &wire(&[hello()]));
    assert!(matches!(
        replies[0],
        Reply::Hello {
            root_empty: false,
            ..
        }
    ));
}

#[test]
fn version_mismatch_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let req = Request::Hello {
        protocol: PROTOCOL_VERSION + 1,
        agent_version: "future".into(),
    };
    let (r, replies) = run_raw(dir.path(), &wire(&[req, Request::Barrier { id: 1 }]));
    assert!(matches!(r, Err(SlaveError::Version { .. })), "{r:?}");
    let [Reply::Fatal { message }] = &replies[..] else {
        panic!("{replies:?}")
    };
    assert!(message.contains("upgrade the slave"), "{message}");
    assert!(
        message.contains(&format!("{}", PROTOCOL_VERSION + 1)),
        "{message}"
    );
}

#[test]
fn missing_or_non_directory_root_is_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    for root in [&missing, &file] {
        let (r, replies) = run_raw(root, &wire(&[hello()]));
        assert!(matches!(r, Err(SlaveError::Root { .. })), "{r:?}");
        let [Reply::Fatal { message }] = &replies[..] else {
            panic!("{replies:?}")
        };
        assert!(message.contains(&root.display().to_string()), "{message}");
    }
}

#[test]
fn first_frame_must_be_hello() {
    let dir = tempfile::tempdir().unwrap();
    let (r, replies) = run_raw(dir.path(), &wire(&[Request::Barrier { id: 1 }]));
    assert!(matches!(r, Err(SlaveError::Unexpected { .. })), "{r:?}");
    assert!(matches!(&replies[..], [Reply::Fatal { .. }]), "{replies:?}");
}
