//! The module layout's rules, checked on the source: imports point one way
//! along `changelog → crawl → ship → transport → slave`, `cli` is on top,
//! and both ends share the wire format in `proto` instead of importing each
//! other.

use std::fs;
use std::path::{Path, PathBuf};

/// `(folder, paths it must not import)`, folders relative to `src/`.
const RULES: &[(&str, &[&str])] = &[
    ("", &["crate::cli", "georep::cli"]),
    (
        "slave",
        &["crate::transport", "crate::ship", "crate::monitor"],
    ),
    (
        "proto",
        &["crate::transport", "crate::slave", "crate::ship"],
    ),
    (
        "transport",
        &["crate::ship", "crate::slave", "crate::monitor"],
    ),
    ("verify", &["crate::slave", "crate::ship", "crate::monitor"]),
    (
        "brick",
        &["crate::transport", "crate::ship", "crate::slave"],
    ),
];

/// Where `cli` may be imported: the command line itself and the binaries.
const CLI_USERS: &[&str] = &["cli", "bin"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The lines of `src` that name `path` in code (comments left out).
fn offending(src: &str, path: &str) -> Vec<String> {
    src.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| l.contains(path))
        .map(|(n, l)| format!("{}: {}", n + 1, l.trim()))
        .collect()
}

#[test]
fn imports_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 50, "found only {} sources", files.len());
    let mut broken = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or("")
            .trim_end_matches(".rs");
        let text = fs::read_to_string(f).unwrap();
        for (folder, banned) in RULES {
            let applies = if folder.is_empty() {
                !CLI_USERS.contains(&top)
            } else {
                top == *folder
            };
            if !applies {
                continue;
            }
            for path in *banned {
                for line in offending(&text, path) {
                    broken.push(format!("src/{} imports {path}: line {line}", rel.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn the_check_sees_an_import() {
    let src = "// crate::cli in a comment is fine\nuse crate::cli::Home;\n";
    assert_eq!(offending(src, "crate::cli"), ["2: use crate::cli::Home;"]);
}
