//! The program the slave's forced command runs (`remote-command`): it is
//! written into the slave's `authorized_keys` and run there by a shell, so
//! it must be a plain program, never a shell snippet.

/// Why `program` cannot be the slave's `remote-command`, if it cannot: it
/// must be an absolute path or a bare program name, of letters, digits and
/// `/._+-@%:,=` only (no space, quote or other shell metacharacter).
pub fn check_program(program: &str) -> Result<(), String> {
    if program.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = program
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._+-@%:,=".contains(*c)))
    {
        return Err(format!(
            "must be an absolute path or a bare program name, without {c:?} (no arguments, no shell syntax)"
        ));
    }
    if program.contains('/') && !program.starts_with('/') {
        return Err("must be an absolute path or a bare program name, not a relative path".into());
    }
    if program.ends_with('/') || program.split('/').any(|c| c == "..") {
        return Err("must name a program, without `..`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_programs_are_remote_commands() {
        for good in [
            "geo-rep",
            "/usr/local/bin/geo-rep",
            "/opt/geo-rep-1.2/bin/geo-rep",
        ] {
            assert_eq!(check_program(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "geo-rep; touch X #",
            "geo-rep $(id)",
            "geo-rep`id`",
            "sudo geo-rep",
            "geo-rep|sh",
            "bin/geo-rep",
            "/usr/bin/../bin/sh",
            "/usr/bin/",
            "geo-rep\n",
            "geo-rep&",
            "~/geo-rep",
        ] {
            assert!(check_program(bad).is_err(), "{bad:?} accepted");
        }
    }
}
