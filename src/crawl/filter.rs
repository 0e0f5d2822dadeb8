//! What a session chooses not to replicate: `exclude` glob patterns and
//! `ignore-deletes`. The worker passes every batch through [`SyncFilter`]
//! just before shipping, so both settings apply to the journal and to the
//! Hybrid Crawl alike, and take effect live.
//!
//! Pattern syntax (matched against the path relative to the brick, bytes):
//! - `*` any run of bytes without `/`; `?` one byte other than `/`;
//!   `[abc]`, `[a-z]`, `[!a-z]` one byte of (not of) a set; `\x` a literal x.
//! - `**` any run of bytes, `/` included; `**/` zero or more directories.
//! - A pattern without `/` is tried against every component, so `*.tmp`
//!   excludes `a/b/c.tmp` and `cache` excludes `x/cache/…`.
//! - A pattern with `/` is anchored at the brick root (a leading `/` is
//!   allowed and ignored): `logs/*.gz` excludes `logs/a.gz` but not
//!   `x/logs/a.gz`.
//! - Whatever lies under an excluded directory is excluded too.

use crate::crawl::{Batch, Entry};
use crate::relpath::RelPath;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    Any,
    /// `**/`: nothing, or any run of bytes ending with `/`.
    Dirs,
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

/// One compiled `exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
    anchored: bool,
}

impl Pattern {
    /// Compiles `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.trim().is_empty() {
            return Err("empty pattern".into());
        }
        if text.contains(['\0', '\n', ',']) {
            return Err(format!(
                "pattern {text:?} contains a comma, newline or NUL (patterns are separated by commas)"
            ));
        }
        let body = text.strip_prefix('/').unwrap_or(text);
        let body = body.strip_suffix('/').unwrap_or(body);
        if body.is_empty() {
            return Err(format!("pattern {text:?} would exclude the whole brick"));
        }
        let anchored = body.contains('/');
        let b = body.as_bytes();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'*' if b.get(i + 1) == Some(&b'*') => {
                    if b.get(i + 2) == Some(&b'/') {
                        tokens.push(Token::Dirs);
                        i += 3;
                    } else {
                        tokens.push(Token::Any);
                        i += 2;
                        while b.get(i) == Some(&b'*') {
                            i += 1;
                        }
                    }
                }
                b'*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                b'?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                b'\\' => {
                    let c = *b
                        .get(i + 1)
                        .ok_or_else(|| format!("pattern {text:?} ends with a lone backslash"))?;
                    tokens.push(Token::Byte(c));
                    i += 2;
                }
                b'[' => {
                    let (tok, next) = parse_class(b, i)
                        .ok_or_else(|| format!("pattern {text:?} has an unclosed `[`"))?;
                    tokens.push(tok);
                    i = next;
                }
                c => {
                    tokens.push(Token::Byte(c));
                    i += 1;
                }
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
            tokens,
            anchored,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path`, or a directory above it, matches.
    pub fn matches(&self, path: &RelPath) -> bool {
        let text = path.as_bytes();
        if text.is_empty() {
            return false;
        }
        if self.anchored {
            let ends = run(&self.tokens, text);
            (1..=text.len()).any(|i| ends[i] && (i == text.len() || text[i] == b'/'))
        } else {
            text.split(|&c| c == b'/')
                .any(|comp| !comp.is_empty() && run(&self.tokens, comp)[comp.len()])
        }
    }
}

/// `[…]` starting at `b[start]`: the token and the index after `]`.
fn parse_class(b: &[u8], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(b.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *b.get(i)?;
        if c == b']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if c == b'\\' {
            i += 1;
            *b.get(i)?
        } else {
            c
        };
        if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = b[i + 2];
            ranges.push((lo.min(hi), lo.max(hi)));
            i += 3;
        } else {
            ranges.push((lo, lo));
            i += 1;
        }
    }
}

/// `ends[i]`: the tokens match `text[..i]`. O(tokens × text), no
/// backtracking, so no pattern can make it slow.
fn run(tokens: &[Token], text: &[u8]) -> Vec<bool> {
    let n = text.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    for tok in tokens {
        let mut next = vec![false; n + 1];
        match tok {
            Token::Star => {
                let mut live = false;
                for i in 0..=n {
                    live = cur[i] || (live && text[i - 1] != b'/');
                    next[i] = live;
                }
            }
            Token::Any => {
                let mut live = false;
                for i in 0..=n {
                    live |= cur[i];
                    next[i] = live;
                }
            }
            Token::Dirs => {
                let mut seen = false;
                for i in 0..=n {
                    next[i] = cur[i] || (seen && i > 0 && text[i - 1] == b'/');
                    seen |= cur[i];
                }
            }
            single => {
                for i in 0..n {
                    if cur[i] && single_matches(single, text[i]) {
                        next[i + 1] = true;
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

fn single_matches(tok: &Token, c: u8) -> bool {
    match tok {
        Token::Byte(b) => *b == c,
        Token::One => c != b'/',
        Token::Class { negated, ranges } => {
            c != b'/' && (ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
        }
        Token::Star | Token::Any | Token::Dirs => false,
    }
}

/// `exclude` and `ignore-deletes`, applied to each batch before it ships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncFilter {
    pub exclude: Vec<Pattern>,
    pub ignore_deletes: bool,
}

impl SyncFilter {
    pub fn is_noop(&self) -> bool {
        self.exclude.is_empty() && !self.ignore_deletes
    }

    pub fn excluded(&self, path: &RelPath) -> bool {
        self.exclude.iter().any(|p| p.matches(path))
    }

    /// `batch` without excluded paths (and, with `ignore-deletes`, without
    /// unlinks, rmdirs and prunes); `None` when nothing needs removing.
    ///
    /// A rename with an excluded side is dropped; if only its source was
    /// excluded, the destination is sent as data (a file appears; a
    /// directory moved in from an excluded name does not, until a Hybrid
    /// Crawl walks it).
    pub fn apply(&self, batch: &Batch) -> Option<Batch> {
        if self.is_noop() {
            return None;
        }
        let mut out = batch.empty_like();
        let mut changed = false;
        for e in batch.entries() {
            let keep = match e {
                Entry::Unlink(_) | Entry::Rmdir(_) | Entry::Prune { .. } if self.ignore_deletes => {
                    false
                }
                Entry::Rename { from, to } => {
                    let (f, t) = (self.excluded(from), self.excluded(to));
                    if f && !t {
                        out.push_data(to.clone());
                    }
                    !(f || t)
                }
                Entry::Prune { dir, keep } => {
                    if self.excluded(dir) {
                        false
                    } else {
                        // The shipper takes the excluded names out of the
                        // keep list (no excluded name leaves the master), so
                        // a copy the slave holds from before the pattern was
                        // set is pruned.
                        out.push_entry(Entry::Prune {
                            dir: dir.clone(),
                            keep: keep.clone(),
                        });
                        continue;
                    }
                }
                other => !other.paths().any(|p| self.excluded(p)),
            };
            if keep {
                out.push_entry(e.clone());
            } else {
                changed = true;
            }
        }
        for p in batch.data() {
            if self.excluded(p) {
                changed = true;
            } else {
                out.push_data(p.clone());
            }
        }
        for p in batch.meta_only() {
            if self.excluded(p) {
                changed = true;
            } else {
                out.push_meta(p.clone());
            }
        }
        changed.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(&p(path))
    }

    #[test]
    fn patterns_match_as_documented() {
        let table: &[(&str, &str, bool)] = &[
            ("*.tmp", "a.tmp", true),
            ("*.tmp", "x/y/a.tmp", true),
            ("*.tmp", "a.tmp.keep", false),
            ("*.tmp", "d.tmp/inside", true),
            ("cache", "cache", true),
            ("cache", "x/cache/y", true),
            ("cache", "xcache", false),
            ("logs/*.gz", "logs/a.gz", true),
            ("logs/*.gz", "x/logs/a.gz", false),
            ("logs/*.gz", "logs/sub/a.gz", false),
            ("/logs/*.gz", "logs/a.gz", true),
            ("logs/**", "logs/sub/a.gz", true),
            ("logs/**", "logs", false),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**/b", "a/x/yb", false),
            ("**/*.o", "src/x.o", true),
            ("**/*.o", "x.o", true),
            ("a/***", "a/b/c", true),
            ("file?.txt", "file1.txt", true),
            ("file?.txt", "file10.txt", false),
            ("[ab]*", "beta", true),
            ("[!ab]*", "beta", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("\\*", "*", true),
            ("\\*", "x", false),
            (
                "a*b*c*d*e*f*g",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ];
        for (pat, path, want) in table {
            assert_eq!(m(pat, path), *want, "{pat:?} vs {path:?}");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("  ", "empty"),
            ("/", "whole brick"),
            ("a,b", "comma"),
            ("[abc", "unclosed"),
            ("x\\", "backslash"),
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn batches_lose_excluded_paths_and_deletes() {
        let mut b = Batch::new();
        b.push_entry(Entry::Create(p("keep")));
        b.push_entry(Entry::Create(p("x.tmp")));
        b.push_entry(Entry::Unlink(p("gone")));
        b.push_entry(Entry::Rename {
            from: p("a.tmp"),
            to: p("a"),
        });
        b.push_data(p("keep"));
        b.push_data(p("x.tmp"));
        b.push_meta(p("dir"));
        b.push_meta(p("dir/y.tmp"));
        let f = SyncFilter {
            exclude: vec![Pattern::parse("*.tmp").unwrap()],
            ignore_deletes: false,
        };
        let out = f.apply(&b).unwrap();
        assert_eq!(
            out.entries(),
            &[Entry::Create(p("keep")), Entry::Unlink(p("gone"))]
        );
        assert_eq!(out.data(), &[p("a"), p("keep")]);
        assert_eq!(out.meta_only().collect::<Vec<_>>(), vec![&p("dir")]);

        let f = SyncFilter {
            exclude: vec![],
            ignore_deletes: true,
        };
        let out = f.apply(&b).unwrap();
        assert!(!out.entries().contains(&Entry::Unlink(p("gone"))));
        assert_eq!(out.entries().len(), 3);
        assert!(SyncFilter::default().apply(&b).is_none());
    }
}
