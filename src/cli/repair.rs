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

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};

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

/// Resends `brick` to the slave on `link`: the walk, then `whole` (paths
/// whose content differs unseen by the quick check).
pub(super) async fn repair<S>(
    link: &mut SlaveLink<S>,
    brick: &BrickPlan,
    live: &Live,
    whole: &[RelPath],
) -> anyhow::Result<Repaired>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut memory = ShipMemory::default();
    let mut done = Repaired::default();
    let mut batch_id = 0;
    let mut crawl = HybridCrawl::new(
        brick.brick.clone(),
        RelPath::root(),
        brick.exclude.clone(),
        None,
    );
    if !live.config.ignore_deletes {
        crawl = crawl.with_prune();
    }
    let mut last = Batch::new();
    for p in whole {
        last.push_data(p.clone());
    }
    let mut last = Some(last);
    // Shipped as they come (memory holds one batch), the walk's first.
    loop {
        let batch = match tokio::task::block_in_place(|| crawl.next_batch(REPAIR_BATCH)) {
            Some(mut batch) => {
                batch.mark_quick_check();
                done.failures.extend(crawl.take_errors());
                batch
            }
            None => match last.take() {
                Some(batch) => batch,
                None => break,
            },
        };
        ship(
            link,
            brick,
            live,
            &mut memory,
            &mut batch_id,
            &batch,
            &mut done,
        )
        .await?;
    }
    Ok(done)
}

async fn ship<S>(
    link: &mut SlaveLink<S>,
    brick: &BrickPlan,
    live: &Live,
    memory: &mut ShipMemory,
    batch_id: &mut u64,
    batch: &Batch,
    done: &mut Repaired,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // `exclude` and `ignore-deletes`, as a worker applies them.
    let filtered = live.filter.apply(batch);
    let batch = filtered.as_ref().unwrap_or(batch);
    if batch.is_empty() {
        return Ok(());
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
    let report = shipper
        .ship(batch)
        .await
        .with_context(|| format!("repairing from {}", brick.brick.display()))?;
    done.files += report.data;
    done.bytes += report.bytes_sent;
    done.failures
        .extend(report.failures.iter().map(|f| f.message.clone()));
    done.failures.extend(report.local_errors);
    Ok(())
}
