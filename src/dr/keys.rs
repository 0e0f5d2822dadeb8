//! Fencing the old master in an authorized_keys file.
//!
//! `create … push-pem` installs, for a slave directory `DIR`,
//! `command="<remote-command> slave --root 'DIR'…",restrict <key> georep:…`.
//! [`fence`] comments out every such line for `DIR` as
//! `# georep-fenced <epoch>: <the line as it was>`; sshd ignores it, and
//! [`unfence`] restores it byte for byte. Other lines are never touched.

/// What starts a fenced line.
pub const FENCE_MARK: &str = "# georep-fenced ";

/// How `create` quotes the slave directory in the forced command.
fn quoted(dir: &str) -> String {
    format!("'{}'", dir.replace('\'', r"'\''"))
}

/// Whether `line` (not commented) is a forced-command key line serving
/// the slave directory `dir`.
pub fn serves(line: &str, dir: &str) -> bool {
    let line = line.trim_start();
    if line.starts_with('#') {
        return false;
    }
    let Some(rest) = line.strip_prefix("command=\"") else {
        return false;
    };
    let Some(command) = rest.split('"').next() else {
        return false;
    };
    let want = format!(" slave --root {}", quoted(dir));
    command.match_indices(&want).any(|(at, _)| {
        let after = &command[at + want.len()..];
        after.is_empty() || after.starts_with(' ')
    })
}

/// The result of [`fence`] or [`unfence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub text: String,
    /// Lines changed by this call.
    pub changed: usize,
    /// Lines already in the wanted state (fenced, for [`fence`]).
    pub already: usize,
}

/// Comments out every line of `text` serving `dir`, marked with `at`
/// (seconds since the epoch). Lines fenced before stay as they are.
pub fn fence(text: &str, dir: &str, at: i64) -> Rewritten {
    let mut out = Rewritten {
        text: String::with_capacity(text.len() + 64),
        changed: 0,
        already: 0,
    };
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if serves(bare, dir) {
            out.text.push_str(&format!("{FENCE_MARK}{at}: {line}"));
            out.changed += 1;
        } else {
            if fenced_original(bare).is_some_and(|l| serves(l, dir)) {
                out.already += 1;
            }
            out.text.push_str(line);
        }
    }
    out
}

/// Puts back every line of `text` that [`fence`] commented out for `dir`.
pub fn unfence(text: &str, dir: &str) -> Rewritten {
    let mut out = Rewritten {
        text: String::with_capacity(text.len()),
        changed: 0,
        already: 0,
    };
    for line in text.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        match fenced_original(bare) {
            Some(orig) if serves(orig, dir) => {
                out.text.push_str(orig);
                if line.ends_with('\n') {
                    out.text.push('\n');
                }
                out.changed += 1;
            }
            _ => {
                if serves(bare, dir) {
                    out.already += 1;
                }
                out.text.push_str(line);
            }
        }
    }
    out
}

/// The original line of a fenced one.
fn fenced_original(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(FENCE_MARK)?;
    let (stamp, orig) = rest.split_once(": ")?;
    stamp.parse::<i64>().ok()?;
    Some(orig)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3Nza georep:gv0@node1";

    fn line(dir: &str, extra: &str) -> String {
        format!(
            "command=\"/usr/bin/geo-rep slave --root {}{extra}\",restrict {KEY}",
            quoted(dir)
        )
    }

    #[test]
    fn only_the_lines_of_the_directory_are_fenced_and_restored_exactly() {
        let mine = line("/srv/dr/gv0", " --owners fake");
        let other = line("/srv/dr/gv01", "");
        let text = format!("ssh-ed25519 AAAAop operator\n{mine}\n{other}\n{mine}");
        let fenced = fence(&text, "/srv/dr/gv0", 1700);
        assert_eq!((fenced.changed, fenced.already), (2, 0));
        assert_eq!(
            fenced.text,
            format!(
                "ssh-ed25519 AAAAop operator\n{FENCE_MARK}1700: {mine}\n{other}\n{FENCE_MARK}1700: {mine}"
            )
        );
        let again = fence(&fenced.text, "/srv/dr/gv0", 1800);
        assert_eq!((again.changed, again.already), (0, 2));
        assert_eq!(again.text, fenced.text);
        let back = unfence(&fenced.text, "/srv/dr/gv0");
        assert_eq!((back.changed, back.already), (2, 0));
        assert_eq!(back.text, text);
        assert_eq!(unfence(&back.text, "/srv/dr/gv0").already, 2);
    }

    #[test]
    fn a_directory_is_matched_whole_and_quoted_as_create_quotes_it() {
        assert!(serves(&line("/dr/it's", ""), "/dr/it's"));
        assert!(!serves(&line("/dr/a b", ""), "/dr/a"));
        assert!(!serves(&line("/dr/ab", ""), "/dr/a"));
        assert!(!serves(&format!("# {}", line("/dr/a", "")), "/dr/a"));
        assert!(!serves(
            "command=\"geo-rep slave --volume 'gv0'\",restrict k",
            "gv0"
        ));
    }
}
