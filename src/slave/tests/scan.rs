//! `Request::Scan`: one directory's entries, in parts, with hashes.

use super::*;
use crate::proto::ScanEntry;

fn scan(seq: u64, path: &str, hashes: bool) -> Request {
    Request::Scan {
        seq,
        path: rp(path),
        hashes,
        rate: 0,
    }
}

#[test]
fn a_directory_is_listed_sorted_in_parts_with_hashes_and_without_temp_files() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("d");
    fs::create_dir(&d).unwrap();
    let n = crate::proto::SCAN_PART_MAX + 3;
    for i in 0..n {
        fs::write(d.join(format!("f{i:05}")), format!("{i}")).unwrap();
    }
    fs::write(d.join(".georep.0123456789abcdef.42.tmp"), b"arriving").unwrap();
    fs::write(d.join(".georep.0123456789abcdef.part"), b"resumable").unwrap();
    std::os::unix::fs::symlink("../elsewhere", d.join("link")).unwrap();

    let replies = session(t.path(), &[scan(7, "d", true), scan(8, "d", false)]);
    let parts: Vec<(u64, &Vec<ScanEntry>, bool)> = replies
        .iter()
        .map(|r| match r {
            Reply::Scan { seq, entries, done } => (*seq, entries, *done),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(parts.len(), 4, "two parts per scan");
    assert_eq!((parts[0].0, parts[0].2), (7, false));
    assert_eq!((parts[1].0, parts[1].2), (7, true));
    let all: Vec<&ScanEntry> = parts[0].1.iter().chain(parts[1].1).collect();
    assert_eq!(all.len(), n + 1, "the files and the link, no temp file");
    let names: Vec<&[u8]> = all.iter().map(|e| &e.name[..]).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name");
    let first = all[0];
    assert_eq!(first.name, b"f00000");
    assert_eq!(first.hash, Some(*blake3::hash(b"0").as_bytes()));
    let link = all.iter().find(|e| e.name == b"link").unwrap();
    assert_eq!(
        link.target.as_deref().map(|t| &t[..]),
        Some(&b"../elsewhere"[..])
    );
    assert_eq!(link.hash, None);
    assert!(
        parts[2].1.iter().all(|e| e.hash.is_none()),
        "hashes only when asked"
    );
}

#[test]
fn a_directory_that_cannot_be_listed_is_a_failure_naming_it() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("file"), b"x").unwrap();
    let replies = session(t.path(), &[scan(3, "missing", true), scan(4, "file", true)]);
    let failed = failures(&replies);
    assert_eq!(failed.len(), 2, "{replies:?}");
    assert_eq!(
        (failed[0].seq, failed[0].path.to_string()),
        (3, "missing".into())
    );
    assert_eq!(failed[1].seq, 4);
}
