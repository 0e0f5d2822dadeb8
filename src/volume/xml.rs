//! Reading `gluster volume info VOL --xml`.

use std::path::PathBuf;

use roxmltree::{Document, Node};

use super::{
    BrickSpec, BrickState, HealState, Rebalance, SetKind, Subvolume, Topology, VolumeError,
};

/// The topology of `vol` from the CLI's XML answer, or why it has none
/// (GlusterFS's own error, e.g. "Volume gv0 does not exist").
pub fn parse_volume_info(vol: &str, xml: &str) -> Result<Topology, VolumeError> {
    parse_volumes(vol, xml)?
        .into_iter()
        .find(|t| t.name == vol)
        .ok_or_else(|| VolumeError::Malformed {
            question: "info",
            vol: vol.to_owned(),
            reason: format!("no <volume> named {vol}"),
        })
}

/// Every volume of an answer (`asked` names the question in errors: a
/// volume, or `all`).
pub fn parse_volumes(asked: &str, xml: &str) -> Result<Vec<Topology>, VolumeError> {
    let doc = answer("info", asked, xml)?;
    doc.root_element()
        .descendants()
        .filter(|n| n.has_tag_name("volume"))
        .map(|v| parse_volume(v, asked))
        .collect()
}

/// The bricks of `vol` and whether each one's process runs, from the
/// answer to `gluster volume status VOL --xml` (daemons such as the
/// self-heal daemon are left out: they have no brick path).
pub fn parse_brick_status(vol: &str, xml: &str) -> Result<Vec<BrickState>, VolumeError> {
    let doc = answer("status", vol, xml)?;
    let bricks = doc
        .root_element()
        .descendants()
        .filter(|n| n.has_tag_name("node"))
        .filter_map(|n| {
            let path = child_text(n, "path")?.trim();
            path.starts_with('/').then(|| BrickState {
                host: child_text(n, "hostname").unwrap_or("").trim().to_owned(),
                path: PathBuf::from(path),
                online: child_text(n, "status").map(str::trim) == Some("1"),
            })
        })
        .collect();
    Ok(bricks)
}

/// The volume's latest rebalance from the answer to `gluster volume
/// rebalance VOL status --xml`; `None` if none was ever started.
pub fn parse_rebalance_status(vol: &str, xml: &str) -> Result<Option<Rebalance>, VolumeError> {
    let doc = match answer("rebalance status", vol, xml) {
        Ok(doc) => doc,
        Err(VolumeError::Refused { reason, .. }) if reason.contains("not started") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let malformed = |reason: &str| VolumeError::Malformed {
        question: "rebalance status",
        vol: vol.to_owned(),
        reason: reason.to_owned(),
    };
    let root = doc.root_element();
    let rebalance = root
        .children()
        .find(|n| n.has_tag_name("volRebalance"))
        .ok_or_else(|| malformed("no <volRebalance>"))?;
    let task = child_text(rebalance, "task-id")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no <task-id>"))?;
    let aggregate = rebalance
        .children()
        .find(|n| n.has_tag_name("aggregate"))
        .ok_or_else(|| malformed("no <aggregate>"))?;
    let status = child_text(aggregate, "status")
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| malformed("no numeric aggregate <status>"))?;
    Ok(Some(Rebalance {
        task: task.to_owned(),
        // GlusterFS's gf_defrag_status_t: 1 started, 5 fix-layout started.
        running: matches!(status, 1 | 5),
        status: child_text(aggregate, "statusStr")
            .unwrap_or("")
            .trim()
            .to_owned(),
    }))
}

/// Each brick's pending heals from the answer to `gluster volume heal VOL
/// info summary --xml`.
pub fn parse_heal_summary(vol: &str, xml: &str) -> Result<Vec<HealState>, VolumeError> {
    let doc = answer("heal info summary", vol, xml)?;
    let bricks = doc
        .root_element()
        .descendants()
        .filter(|n| n.has_tag_name("brick"))
        .filter_map(|b| {
            let name = child_text(b, "name")?.trim();
            let (host, path) = name.split_once(':').filter(|(_, p)| p.starts_with('/'))?;
            let count = |tag: &str| child_text(b, tag).and_then(|n| n.trim().parse::<u64>().ok());
            let connected = child_text(b, "status").map(str::trim) == Some("Connected");
            let pending = connected
                .then(|| {
                    Some(
                        count("numberOfEntriesInHealPending")?
                            + count("numberOfEntriesInSplitBrain")?,
                    )
                })
                .flatten();
            Some(HealState {
                host: host.to_owned(),
                path: PathBuf::from(path),
                pending,
            })
        })
        .collect();
    Ok(bricks)
}

/// Whether the answer to `gluster volume heal VOL --xml` says the heal
/// was launched.
pub fn parse_heal_launched(vol: &str, xml: &str) -> Result<(), VolumeError> {
    answer("heal", vol, xml).map(drop)
}

/// The parsed answer of the CLI, once its `opRet` says it succeeded.
fn answer<'x>(
    question: &'static str,
    asked: &str,
    xml: &'x str,
) -> Result<Document<'x>, VolumeError> {
    let malformed = |reason: String| VolumeError::Malformed {
        question,
        vol: asked.to_owned(),
        reason,
    };
    let doc = Document::parse(xml).map_err(|e| malformed(e.to_string()))?;
    let root = doc.root_element();
    let ret = child_text(root, "opRet").ok_or_else(|| malformed("no opRet".into()))?;
    if ret.trim() != "0" {
        let reason = child_text(root, "opErrstr")
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map_or_else(|| format!("opRet {ret}"), str::to_owned);
        return Err(VolumeError::Refused {
            question,
            vol: asked.to_owned(),
            reason,
        });
    }
    Ok(doc)
}

fn parse_volume(volume: Node, asked: &str) -> Result<Topology, VolumeError> {
    let vol = child_text(volume, "name").unwrap_or("").trim();
    let malformed = |reason: String| VolumeError::Malformed {
        question: "info",
        vol: asked.to_owned(),
        reason: format!("volume {vol}: {reason}"),
    };
    let text = |tag: &str| child_text(volume, tag).map(str::trim).unwrap_or("");
    let count = |tag: &str| text(tag).parse::<u32>().unwrap_or(0);

    let bricks: Vec<BrickSpec> = volume
        .children()
        .filter(|n| n.has_tag_name("bricks"))
        .flat_map(|b| b.children().filter(|n| n.has_tag_name("brick")))
        .map(|b| {
            let name = child_text(b, "name").unwrap_or("").trim();
            let (host, path) = name
                .split_once(':')
                .filter(|(_, p)| p.starts_with('/'))
                .ok_or_else(|| malformed(format!("brick {name:?} is not HOST:/PATH")))?;
            Ok(BrickSpec {
                host: host.to_owned(),
                path: PathBuf::from(path),
                arbiter: child_text(b, "isArbiter").map(str::trim) == Some("1"),
            })
        })
        .collect::<Result<_, VolumeError>>()?;
    if bricks.is_empty() {
        return Err(malformed("no bricks listed".into()));
    }

    let (kind, set_size) = match (count("disperseCount"), count("replicaCount")) {
        (d, _) if d > 1 => (
            SetKind::Disperse {
                redundancy: count("redundancyCount"),
            },
            d,
        ),
        (_, r) if r > 1 => (SetKind::Replica, r),
        _ => (SetKind::Single, 1),
    };
    let set_size = set_size as usize;
    if !bricks.len().is_multiple_of(set_size) {
        return Err(malformed(format!(
            "{} bricks do not divide into sets of {set_size}",
            bricks.len()
        )));
    }
    let subvolumes = bricks
        .chunks(set_size)
        .enumerate()
        .map(|(i, set)| Subvolume {
            kind,
            bricks: set.to_vec(),
            name: match kind {
                SetKind::Replica => format!("{vol}-replicate-{i}"),
                SetKind::Disperse { .. } => format!("{vol}-disperse-{i}"),
                SetKind::Single => format!("{vol}-client-{i}"),
            },
        })
        .collect();

    let sharded = volume
        .descendants()
        .filter(|n| n.has_tag_name("option"))
        .any(|o| {
            child_text(o, "name").map(str::trim) == Some("features.shard")
                && matches!(
                    child_text(o, "value").map(str::trim),
                    Some("on" | "yes" | "true" | "enable" | "1")
                )
        });
    Ok(Topology {
        name: vol.to_owned(),
        type_name: text("typeStr").to_owned(),
        status: text("statusStr").to_owned(),
        subvolumes,
        sharded,
    })
}

/// The text of `node`'s first child element `tag` (entities decoded).
fn child_text<'a>(node: Node<'a, '_>, tag: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.has_tag_name(tag))
        .map(|n| n.text().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_answer_says_why() {
        let xml = "<cliOutput><opRet>-1</opRet><opErrno>0</opErrno><opErrstr>Volume nope does not exist</opErrstr></cliOutput>";
        let err = parse_volume_info("nope", xml).unwrap_err();
        assert!(err.is_missing_volume());
        assert_eq!(
            err.to_string(),
            "gluster volume info nope: Volume nope does not exist"
        );
    }

    #[test]
    fn entities_in_brick_paths_are_decoded() {
        let xml = r#"<cliOutput><opRet>0</opRet><opErrstr/><volInfo><volumes><volume>
            <name>mvol</name><statusStr>Started</statusStr><typeStr>Distribute</typeStr>
            <replicaCount>1</replicaCount><disperseCount>0</disperseCount>
            <bricks><brick uuid="1">far:/srv/a&amp;b<name>far:/srv/a&amp;b</name><isArbiter>0</isArbiter></brick></bricks>
            </volume></volumes></volInfo></cliOutput>"#;
        let t = parse_volume_info("mvol", xml).unwrap();
        assert_eq!(t.status, "Started");
        assert_eq!(t.bricks().next().unwrap().path, PathBuf::from("/srv/a&b"));
        assert_eq!(t.unsupported(), None);
    }

    #[test]
    fn brick_status_says_which_brick_processes_run() {
        let xml = r#"<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/><volStatus><volumes><volume>
            <volName>rexp</volName><nodeCount>3</nodeCount>
            <node><hostname>vm</hostname><path>/b/1</path><status>0</status><port>N/A</port><pid>-1</pid></node>
            <node><hostname>vm</hostname><path>/b/2</path><status>1</status><port>56362</port><pid>9626</pid></node>
            <node><hostname>Self-heal Daemon</hostname><path>localhost</path><status>1</status></node>
            </volume></volumes></volStatus></cliOutput>"#;
        let got: Vec<(String, bool)> = parse_brick_status("rexp", xml)
            .unwrap()
            .into_iter()
            .map(|b| (b.path.display().to_string(), b.online))
            .collect();
        assert_eq!(got, [("/b/1".to_owned(), false), ("/b/2".to_owned(), true)]);
        let stopped = "<cliOutput><opRet>-1</opRet><opErrstr>Volume rexp is not started</opErrstr></cliOutput>";
        assert!(parse_brick_status("rexp", stopped)
            .unwrap_err()
            .to_string()
            .contains("not started"));
    }

    /// Recorded from GlusterFS 10.3 with the first brick's process killed
    /// and two files written through the mount: the second brick holds
    /// them (and the root's entry change) for the first.
    #[test]
    fn a_heal_summary_says_what_each_brick_holds_for_the_others() {
        let got = parse_heal_summary("r", include_str!("testdata/heal-summary.xml")).unwrap();
        let got: Vec<(String, Option<u64>)> = got
            .into_iter()
            .map(|h| (format!("{}:{}", h.host, h.path.display()), h.pending))
            .collect();
        let brick = |n| format!("vm:/tmp/georep-it-CjDwTH/gluster-vprobe/brick{n}");
        assert_eq!(got, [(brick(1), None), (brick(2), Some(3))]);
    }

    #[test]
    fn garbage_is_an_error_not_an_empty_volume() {
        assert!(matches!(
            parse_volume_info("v", "<cliOutput><opRet>0</opRet></cliOutput>"),
            Err(VolumeError::Malformed { .. })
        ));
        assert!(parse_volume_info("v", "not xml").is_err());
    }

    #[test]
    fn a_rebalance_is_running_ended_or_never_started() {
        let running =
            parse_rebalance_status("dv", include_str!("testdata/rebalance-running.xml")).unwrap();
        let running = running.unwrap();
        assert!(running.running);
        assert_eq!(running.task, "c7880c03-616f-4c5b-a568-930c8a698d44");
        assert_eq!(running.status, "in progress");
        let done = parse_rebalance_status("dv", include_str!("testdata/rebalance-done.xml"))
            .unwrap()
            .unwrap();
        assert!(!done.running && done.task == running.task && done.status == "completed");
        let none =
            parse_rebalance_status("dv", include_str!("testdata/rebalance-none.xml")).unwrap();
        assert_eq!(none, None);
        let err = parse_rebalance_status("dv", "<cliOutput><opRet>0</opRet></cliOutput>");
        assert!(err.is_err());
    }
}
