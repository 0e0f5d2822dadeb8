//! Bricks are canonical: `create` records each brick by its real path (a
//! brick given through a symlink would be refused by the crawl, which never
//! follows one, and no prefix check against it would hold), and neither
//! `create` nor `start` accepts a brick that holds georep's home (its keys,
//! database and logs would be replicated) or, on the same host, the slave
//! directory (the copy would replicate itself).

use std::io;
use std::path::{Path, PathBuf};

use crate::session::SlaveUrl;

#[derive(Debug, thiserror::Error)]
pub enum BrickCheckError {
    #[error("brick {}: {source}", .brick.display())]
    Resolve { brick: PathBuf, source: io::Error },
    #[error("brick {}: not a directory", .brick.display())]
    NotADirectory { brick: PathBuf },
    #[error("brick {} ({}) holds the georep home {}: its keys, database and logs would be replicated; keep GEOREP_HOME outside every brick", .brick.display(), .real.display(), .home.display())]
    HoldsHome {
        brick: PathBuf,
        real: PathBuf,
        home: PathBuf,
    },
    #[error("brick {} ({}) and the slave directory {} on this host lie one within the other: the copy would replicate itself", .brick.display(), .real.display(), .slave.display())]
    HoldsSlave {
        brick: PathBuf,
        real: PathBuf,
        slave: PathBuf,
    },
    #[error("brick {} now resolves to {}: a symlink on its path changed since `create`; delete and re-create the session to replicate the new place", .brick.display(), .real.display())]
    Moved { brick: PathBuf, real: PathBuf },
}

/// The real path of the brick `given`: a directory, holding neither `home`
/// nor `slave_here` (the slave directory when the slave is this host), and
/// held by neither.
pub fn resolve_brick(
    given: &Path,
    home: &Path,
    slave_here: Option<&Path>,
) -> Result<PathBuf, BrickCheckError> {
    let real = std::fs::canonicalize(given).map_err(|source| BrickCheckError::Resolve {
        brick: given.to_owned(),
        source,
    })?;
    if !real.is_dir() {
        return Err(BrickCheckError::NotADirectory {
            brick: given.to_owned(),
        });
    }
    let home = real_or_absolute(home);
    if home.starts_with(&real) {
        return Err(BrickCheckError::HoldsHome {
            brick: given.to_owned(),
            real,
            home,
        });
    }
    if let Some(slave) = slave_here.map(real_or_absolute) {
        if slave.starts_with(&real) || real.starts_with(&slave) {
            return Err(BrickCheckError::HoldsSlave {
                brick: given.to_owned(),
                real,
                slave,
            });
        }
    }
    Ok(real)
}

/// [`resolve_brick`] for a brick recorded at `create`: it must still be
/// where it was recorded.
pub fn recheck_brick(
    recorded: &Path,
    home: &Path,
    slave_here: Option<&Path>,
) -> Result<(), BrickCheckError> {
    let real = resolve_brick(recorded, home, slave_here)?;
    if real != recorded {
        return Err(BrickCheckError::Moved {
            brick: recorded.to_owned(),
            real,
        });
    }
    Ok(())
}

/// The slave directory of `slave` when the slave is this host (a loopback
/// address, `localhost` or this host's name) and names a directory by its
/// absolute path.
pub fn slave_dir_here(slave: &SlaveUrl) -> Option<PathBuf> {
    let host = slave.host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let this_host = hostname::get().is_ok_and(|h| h.to_string_lossy().eq_ignore_ascii_case(host));
    let dir = Path::new(&slave.volume);
    ((loopback || this_host || host.eq_ignore_ascii_case("localhost")) && dir.is_absolute())
        .then(|| dir.to_owned())
}

/// `path` with symlinks resolved where it exists; else as an absolute path.
fn real_or_absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bricks_resolve_to_real_directories_away_from_home_and_slave() {
        let t = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(t.path()).unwrap();
        let (brick, home, slave) = (real.join("brick"), real.join("home"), real.join("slave"));
        for d in [&brick, &home, &slave] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(real.join("file"), b"").unwrap();
        let link = real.join("link");
        std::os::unix::fs::symlink(&brick, &link).unwrap();

        assert_eq!(resolve_brick(&link, &home, Some(&slave)).unwrap(), brick);
        assert!(recheck_brick(&brick, &home, Some(&slave)).is_ok());
        assert!(matches!(
            recheck_brick(&link, &home, None),
            Err(BrickCheckError::Moved { .. })
        ));
        assert!(matches!(
            resolve_brick(&real.join("file"), &home, None),
            Err(BrickCheckError::NotADirectory { .. })
        ));
        assert!(matches!(
            resolve_brick(&real.join("missing"), &home, None),
            Err(BrickCheckError::Resolve { .. })
        ));
        // Through a symlink to the directory that holds the home: refused.
        let up = real.join("up");
        std::os::unix::fs::symlink(&real, &up).unwrap();
        let e = resolve_brick(&up, &home, None).unwrap_err();
        assert!(matches!(e, BrickCheckError::HoldsHome { .. }), "{e}");
        // A home not created yet, below the brick, counts too.
        let e = resolve_brick(&link, &brick.join("georep"), None).unwrap_err();
        assert!(matches!(e, BrickCheckError::HoldsHome { .. }), "{e}");
        let e = resolve_brick(&up, Path::new("/nonexistent/georep"), Some(&slave)).unwrap_err();
        assert!(matches!(e, BrickCheckError::HoldsSlave { .. }), "{e}");
        let e = resolve_brick(&brick, &home, Some(&brick.join("copy"))).unwrap_err();
        assert!(matches!(e, BrickCheckError::HoldsSlave { .. }), "{e}");
    }

    #[test]
    fn only_a_slave_on_this_host_is_looked_at() {
        let url = |host: &str, dir: &str| SlaveUrl {
            user: "root".into(),
            host: host.into(),
            volume: dir.into(),
        };
        assert_eq!(
            slave_dir_here(&url("127.0.0.1", "/srv/dr")),
            Some(PathBuf::from("/srv/dr"))
        );
        assert!(slave_dir_here(&url("localhost", "/srv/dr")).is_some());
        assert!(slave_dir_here(&url("[::1]", "/srv/dr")).is_some());
        assert!(slave_dir_here(&url("dr1.example.org", "/srv/dr")).is_none());
        assert!(slave_dir_here(&url("127.0.0.1", "gv0")).is_none());
    }
}
