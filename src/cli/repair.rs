//! `verify --repair`: resends what differs through the normal shipping
//! path (`ship::Shipper`, on the link verify opened), before verify looks
//! again.
//!
//! What is resent: a walk of the brick with pruning (a Hybrid Crawl, as a
//! worker heals a journal gap) whose files go through the quick check, so
//! missing, extra and retyped entries, sizes, modes, owners, mtimes and
//! symlink targets are put right and only files whose size or mtime
//! differ carry their content; then, in full, the files whose content or
//! hard-link group differs with size and mtime alike (what the quick check
//! cannot see). The session must not ship meanwhile (stopped or paused).
//!
//! A volume of several legs (see `verify_legs`) is walked one leg at a
//! time, each through the volume's view of all of them, as the workers of
//! a distributed volume ship: a prune keeps what another leg holds, and a
//! file a leg has only as a DHT link file is sent from the leg that holds
//! it.

use std::path::PathBuf;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::brick::volume::{LocalBricks, VolumeView};
use crate::crawl::journal::ChangeSource;

use crate::crawl::{Batch, HybridCrawl};
use crate::monitor::{BrickPlan, Live};
use crate::proto::XattrScope;
use crate::relpath::RelPath;
use crate::ship::{ShipMemory, Shipper};
use crate::transport::link::SlaveLink;

/// Operations per batch of the repair walk.
const REPAIR_BATCH: usize = 8192;

/// What a repair sent.
#[derive(Debug, Default)]
pub(super) struct Repaired {
    pub files: u64,
    pub bytes: u64,
    pub failures: Vec<String>,
}

/// Resends the volume read through `legs` (one brick a distribute leg)
/// to the slave on `link`: each leg's walk, then `whole` (paths whose
/// content differs unseen by the quick check) and the files a walk handed
/// to the leg that holds them.
pub(super) async fn repair<S>(
    link: &mut SlaveLink<S>,
    legs: &[&BrickPlan],
    live: &Live,
    whole: &[RelPath],
) -> anyhow::Result<Repaired>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut memory = ShipMemory::default();
    let mut done = Repaired::default();
    let mut batch_id = 0;
    let mut handed: Vec<(PathBuf, RelPath)> = Vec::new();
    let paths: Vec<PathBuf> = legs.iter().map(|b| b.brick.clone()).collect();
    for (i, brick) in legs.iter().enumerate() {
        // This leg first: a name it holds is its to send.
        let mut seen = vec![paths[i].clone()];
        seen.extend(paths.iter().filter(|p| **p != paths[i]).cloned());
        let view = (legs.len() > 1).then(|| LocalBricks::open(&seen));
        let leg = Leg {
            brick,
            live,
            view: view.as_ref().map(|v| v as &dyn VolumeView),
        };
        let mut crawl = HybridCrawl::new(
            brick.brick.clone(),
            RelPath::root(),
            brick.exclude.clone(),
            None,
        );
        if !live.config.ignore_deletes {
            crawl = crawl.with_prune();
        }
        // Shipped as they come (memory holds one batch).
        while let Some(mut batch) = tokio::task::block_in_place(|| crawl.next_batch(REPAIR_BATCH)) {
            batch.mark_quick_check();
            done.failures.extend(crawl.take_errors());
            handed.extend(
                leg.ship(link, &mut memory, &mut batch_id, &batch, &mut done)
                    .await?,
            );
        }
    }
    for (i, brick) in legs.iter().enumerate() {
        let mut last = Batch::new();
        // Of a single leg every path; else each where its leg holds it.
        let view = LocalBricks::open(&paths[i..=i]);
        for p in whole {
            if legs.len() == 1 || view.holds(p) {
                last.push_data(p.clone());
            }
        }
        for (_, p) in handed.iter().filter(|(h, _)| *h == paths[i]) {
            last.push_data(p.clone());
        }
        let leg = Leg {
            brick,
            live,
            view: None,
        };
        leg.ship(link, &mut memory, &mut batch_id, &last, &mut done)
            .await?;
    }
    Ok(done)
}

/// One leg's shipping, as its worker ships.
struct Leg<'a> {
    brick: &'a BrickPlan,
    live: &'a Live,
    /// The volume's view (all legs, this one first), when it has several.
    view: Option<&'a dyn VolumeView>,
}

impl Leg<'_> {
    /// Ships `batch` from this leg; the files it hands to another leg.
    async fn ship<S>(
        &self,
        link: &mut SlaveLink<S>,
        memory: &mut ShipMemory,
        batch_id: &mut u64,
        batch: &Batch,
        done: &mut Repaired,
    ) -> anyhow::Result<Vec<(PathBuf, RelPath)>>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (brick, live) = (self.brick, self.live);
        // `exclude` and `ignore-deletes`, as a worker applies them.
        let filtered = live.filter.apply(batch);
        let batch = filtered.as_ref().unwrap_or(batch);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        *batch_id += 1;
        link.set_compression(live.config.compression());
        let mut shipper = Shipper::new(link, &brick.brick, memory, *batch_id);
        shipper.xattrs = XattrScope {
            user: live.config.sync_xattrs,
            acls: live.config.sync_acls,
        };
        shipper.exclude = brick.exclude.clone();
        shipper.filter = live.filter.clone();
        shipper.prune_touched = !live.config.ignore_deletes;
        shipper.gluster_brick = !matches!(brick.source, ChangeSource::Notify(_));
        shipper.volume = self.view;
        let report = shipper
            .ship(batch)
            .await
            .with_context(|| format!("repairing from {}", brick.brick.display()))?;
        done.files += report.data;
        done.bytes += report.bytes_sent;
        done.failures
            .extend(report.failures.iter().map(|f| f.message.clone()));
        done.failures.extend(report.local_errors);
        Ok(report.handed_off)
    }
}
