//! Asking the local `gluster` CLI.

use std::path::PathBuf;
use std::process::Command;

use super::{
    parse_brick_status, parse_heal_launched, parse_heal_summary, parse_rebalance_status,
    parse_volume_info, xml::parse_volumes, BrickState, HealState, Rebalance, Topology, VolumeError,
};

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
    parse_volume_info(vol, &ask("info", vol)?)
}

/// `gluster volume info --xml`: every volume of the cluster.
pub fn all_volumes() -> Result<Vec<Topology>, VolumeError> {
    parse_volumes("all", &ask("info", "all")?)
}

/// `gluster volume status VOL --xml`: which brick processes run.
pub fn brick_status(vol: &str) -> Result<Vec<BrickState>, VolumeError> {
    parse_brick_status(vol, &ask("status", vol)?)
}

/// `gluster volume rebalance VOL status --xml`: the volume's latest
/// rebalance, if one was ever started.
pub fn rebalance_status(vol: &str) -> Result<Option<Rebalance>, VolumeError> {
    let xml = run("rebalance status", vol, &["rebalance", vol, "status"])?;
    parse_rebalance_status(vol, &xml)
}

/// `gluster volume heal VOL info summary --xml`: what each replica brick
/// holds for the other members of its set.
pub fn heal_summary(vol: &str) -> Result<Vec<HealState>, VolumeError> {
    let xml = run("heal info summary", vol, &["heal", vol, "info", "summary"])?;
    parse_heal_summary(vol, &xml)
}

/// `gluster volume heal VOL`: asks the self-heal daemon to heal what the
/// bricks' indices list now rather than at its next periodic crawl.
pub fn heal_now(vol: &str) -> Result<(), VolumeError> {
    let xml = run("heal", vol, &["heal", vol])?;
    parse_heal_launched(vol, &xml)
}

/// The XML answer to `gluster volume QUESTION WHAT --xml`.
fn ask(question: &'static str, what: &str) -> Result<String, VolumeError> {
    run(question, what, &[question, what])
}

/// The XML answer to `gluster volume ARGS --xml` (`question` and `what`
/// name it in errors).
fn run(question: &'static str, what: &str, args: &[&str]) -> Result<String, VolumeError> {
    let cli = gluster_cli();
    let out = Command::new(&cli)
        .args(["--mode=script", "volume"])
        .args(args)
        .arg("--xml")
        .output()
        .map_err(|source| VolumeError::Spawn {
            cli: cli.clone(),
            question,
            vol: what.to_owned(),
            source,
        })?;
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && !xml.contains("<opRet>") {
        return Err(VolumeError::Refused {
            question,
            vol: what.to_owned(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(xml)
}
