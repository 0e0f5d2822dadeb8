//! Finding the bricks of a GlusterFS volume on this node, for `create`
//! without `--brick`: `gluster volume info VOL --xml` lists every brick as
//! `<name>HOST:/PATH</name>`; the local ones are those whose host names
//! this machine.

use std::net::{IpAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::session::VolumeName;

/// The `gluster` CLI to ask (`GEOREP_GLUSTER` overrides it).
fn gluster_cli() -> PathBuf {
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

/// The bricks of `vol` that live on this node.
pub fn local_bricks(vol: &VolumeName) -> anyhow::Result<Vec<PathBuf>> {
    let cli = gluster_cli();
    let out = Command::new(&cli)
        .args(["--mode=script", "volume", "info", vol.as_str(), "--xml"])
        .output()
        .with_context(|| format!("running {} volume info {vol} --xml", cli.display()))?;
    let xml = String::from_utf8_lossy(&out.stdout);
    if let Some(err) = failure(&xml) {
        bail!("gluster volume info {vol}: {err}");
    }
    if !out.status.success() {
        bail!(
            "gluster volume info {vol} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let all = bricks(&xml);
    if all.is_empty() {
        bail!("gluster volume info {vol} lists no bricks");
    }
    let local: Vec<PathBuf> = all
        .iter()
        .filter(|(host, _)| is_local(host))
        .map(|(_, p)| p.clone())
        .collect();
    if local.is_empty() {
        bail!(
            "no brick of {vol} is on this node (bricks: {}); run `create` on a node that holds one, or pass --brick",
            all.iter()
                .map(|(h, p)| format!("{h}:{}", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(local)
}

/// The error GlusterFS reported, if the answer says it failed.
fn failure(xml: &str) -> Option<String> {
    let ret = element(xml, "opRet")?;
    (ret.trim() != "0").then(|| {
        element(xml, "opErrstr")
            .map(|e| unescape(e.trim()))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("opRet {ret}"))
    })
}

/// `(host, path)` of every `<brick>`'s `<name>HOST:PATH</name>`.
fn bricks(xml: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<brick ").or_else(|| rest.find("<brick>")) {
        let after = &rest[start..];
        let Some(end) = after.find("</brick>") else {
            break;
        };
        let brick = &after[..end];
        if let Some(name) = element(brick, "name") {
            if let Some((host, path)) = unescape(name.trim()).split_once(':') {
                if path.starts_with('/') {
                    out.push((host.to_owned(), PathBuf::from(path)));
                }
            }
        }
        rest = &after[end..];
    }
    out
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..start + len])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// A host names this machine when it is its host name, or resolves to an
/// address this machine can bind.
fn is_local(host: &str) -> bool {
    if hostname::get().is_ok_and(|h| h == host) {
        return true;
    }
    let Ok(addrs) = (host, 0).to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| bindable(a.ip()))
}

fn bindable(ip: IpAddr) -> bool {
    UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <opErrno>0</opErrno>
  <opErrstr/>
  <volInfo>
    <volumes>
      <volume>
        <name>mvol</name>
        <bricks>
          <brick uuid="9470f16a-bceb-4f15-b2b8-df25bb3bdbee">vm:/tmp/gexp/b1<name>vm:/tmp/gexp/b1</name><hostUuid>9470f16a-bceb-4f15-b2b8-df25bb3bdbee</hostUuid><isArbiter>0</isArbiter></brick>
          <brick uuid="1">far:/srv/a&amp;b<name>far:/srv/a&amp;b</name><hostUuid>1</hostUuid><isArbiter>0</isArbiter></brick>
        </bricks>
      </volume>
    </volumes>
  </volInfo>
</cliOutput>"#;

    #[test]
    fn bricks_are_read_from_volume_info() {
        assert_eq!(failure(INFO), None);
        assert_eq!(
            bricks(INFO),
            vec![
                ("vm".to_owned(), PathBuf::from("/tmp/gexp/b1")),
                ("far".to_owned(), PathBuf::from("/srv/a&b"))
            ]
        );
    }

    #[test]
    fn a_failed_answer_says_why() {
        let xml = "<cliOutput><opRet>-1</opRet><opErrno>0</opErrno><opErrstr>Volume nope does not exist</opErrstr></cliOutput>";
        assert_eq!(failure(xml).as_deref(), Some("Volume nope does not exist"));
        assert!(bricks(xml).is_empty());
    }

    #[test]
    fn loopback_is_local_and_a_foreign_address_is_not() {
        assert!(is_local("127.0.0.1"));
        assert!(!is_local("192.0.2.1"));
        assert!(!is_local("no-such-host.invalid"));
    }
}
