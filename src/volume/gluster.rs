//! Asking the local `gluster` CLI.

use std::path::PathBuf;
use std::process::Command;

use super::{parse_volume_info, xml::parse_volumes, Topology, VolumeError};

/// The `gluster` CLI to ask (`GEOREP_GLUSTER` overrides it).
pub fn gluster_cli() -> PathBuf {
    std::env::var_os("GEOREP_GLUSTER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("gluster"))
}

/// Whether a `gluster` CLI can be run here.
pub fn gluster_present() -> bool {
    Command::new(gluster_cli())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `gluster volume info VOL --xml`, read.
pub fn volume_info(vol: &str) -> Result<Topology, VolumeError> {
    parse_volume_info(vol, &ask(vol)?)
}

/// `gluster volume info --xml`: every volume of the cluster.
pub fn all_volumes() -> Result<Vec<Topology>, VolumeError> {
    parse_volumes("all", &ask("all")?)
}

/// The XML answer to `gluster volume info WHAT --xml`.
fn ask(what: &str) -> Result<String, VolumeError> {
    let cli = gluster_cli();
    let out = Command::new(&cli)
        .args(["--mode=script", "volume", "info", what, "--xml"])
        .output()
        .map_err(|source| VolumeError::Spawn {
            cli: cli.clone(),
            vol: what.to_owned(),
            source,
        })?;
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && !xml.contains("<opRet>") {
        return Err(VolumeError::Refused {
            vol: what.to_owned(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(xml)
}
