//! `geo-rep promote DIR` on the DR host: the primary is lost, the DR copy
//! becomes the primary.
//!
//! Each step is idempotent, and they run in an order that leaves nothing
//! half done after a kill at any point (run it again and it converges):
//! 1. mark the directory promoted (a root xattr, see `slave::commits`): a
//!    `geo-rep slave` serving it refuses the handshake and every commit;
//! 2. fence the old master: its key lines for the directory are commented
//!    out (`dr::keys`), and the slave processes still serving it are ended;
//! 3. record the promotion point (`dr::promotion`): the mark's time and the
//!    stime of each old master brick as the commits left it;
//! 4. start georep's journal hook on the directory (`geo-rep dr-journal`,
//!    in the background), and return once its watch is in place, so every
//!    change made at DR from then on is journalled.
//!
//! `geo-rep demote DIR` undoes it, in the reverse order (the journal
//! stops, the fence is lifted, the mark and the record go), each step
//! idempotent too: `failback --switch` runs it once the master is level.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::lifecycle::running_with_arg;
use super::{Home, UsageError};
use crate::dr::keys;
use crate::dr::promotion::{PromotedDir, Promotion};
use crate::session::Timestamp;
use crate::slave::commits;

/// The subcommand of the journal process, which tells it apart in `/proc`.
const JOURNAL_CMD: &str = "dr-journal";

/// How long `promote` waits for the journal hook to watch the tree.
const JOURNAL_READY: Duration = Duration::from_secs(120);

pub struct PromoteArgs {
    /// The slave directory as the session names it.
    pub dir: String,
    /// The slave user's authorized_keys (default `~/.ssh/authorized_keys`).
    pub authorized_keys_file: Option<PathBuf>,
}

pub fn promote(home: &Home, args: PromoteArgs) -> anyhow::Result<()> {
    if !args.dir.starts_with('/') {
        return Err(UsageError(format!(
            "promote needs the slave directory as an absolute path; {:?} looks like a GlusterFS slave volume, which promote does not handle yet (name the directory it is mounted on)",
            args.dir
        ))
        .into());
    }
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("slave directory {}", args.dir))?;
    let root = std::fs::File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    if !root.metadata()?.is_dir() {
        bail!("{} is not a directory", dir.display());
    }

    // 1. The mark: from here on no master batch is committed.
    let marked = commits::promoted(&root)
        .with_context(|| format!("reading the promotion mark of {}", dir.display()))?;
    let at = marked
        .map(Timestamp::from_nanos)
        .unwrap_or_else(Timestamp::now);
    if marked.is_none() {
        commits::set_promoted(&root, Some(at.nanos())).with_context(|| {
            format!(
                "marking {} promoted (its file system must keep user xattrs)",
                dir.display()
            )
        })?;
    }

    // 2. The fence.
    let keys_file = keys_file(args.authorized_keys_file)?;
    let names = names_of(&args.dir, &dir);
    let (fenced, already) = fence_keys(&keys_file, &names, at.secs())?;
    let ended = end_slave_processes(&names);

    // 3. The record (the first one stays: a re-run keeps its point).
    let place = PromotedDir::of(home.root(), &dir);
    let record = match place.load()? {
        Some(r) => r,
        None => {
            let stimes = commits::stimes(&root)
                .with_context(|| format!("reading the commit records of {}", dir.display()))?;
            let r = Promotion::new(dir.clone(), at, &stimes);
            place.save(&r)?;
            r
        }
    };

    // 4. The journal.
    let pid = ensure_journal(home, &place, &dir)?;

    println!(
        "{} promoted to primary at {}",
        dir.display(),
        super::status::local(record.promoted_at())
    );
    println!(
        "fenced the old master in {}: {fenced} key line(s) disabled now, {already} before{}",
        keys_file.display(),
        if ended > 0 {
            format!("; ended {ended} slave process(es) still serving it")
        } else {
            String::new()
        }
    );
    if fenced + already == 0 {
        println!(
            "warning: no key line serving {} was found in {}; if the old master's key is installed elsewhere, disable it there (the directory itself refuses every master now)",
            dir.display(),
            keys_file.display()
        );
    }
    if record.points.is_empty() {
        println!("promotion point: no master brick recorded a commit here (an older georep, or none ever committed)");
    }
    for p in &record.points {
        println!(
            "promotion point: {} had committed everything up to {} ({})",
            p.brick,
            super::status::local(Promotion::stime(p).as_timestamp()),
            Promotion::stime(p)
        );
    }
    println!(
        "journalling every change in {} (pid {pid}, journal {})",
        dir.display(),
        place.journal_dir().display()
    );
    println!(
        "next: use {} as the primary; once the old master is repaired, run `geo-rep failback MASTERVOL SLAVE` there",
        dir.display()
    );
    Ok(())
}

/// Comments out the lines serving any of `names` in `file`; how many were
/// disabled now, and how many were before.
fn fence_keys(file: &Path, names: &[String], at: i64) -> anyhow::Result<(usize, usize)> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let (mut text_now, mut changed, mut already) = (text.clone(), 0, 0);
    for name in names {
        let r = keys::fence(&text_now, name, at);
        text_now = r.text;
        changed += r.changed;
        already += r.already;
    }
    if changed > 0 {
        replace_keeping_mode(file, text_now.as_bytes())?;
    }
    Ok((changed, already))
}

/// Replaces `file` atomically with `contents`, keeping its mode (sshd's
/// `StrictModes` checks it).
pub(super) fn replace_keeping_mode(file: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mode = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .permissions()
        .mode();
    let tmp = file.with_extension("georep-tmp");
    crate::fsutil::write_private_file(&tmp, contents)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o7777))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))?;
    if let Some(parent) = file.parent() {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Kills the `geo-rep slave --root DIR` processes of this user serving one
/// of `names`: a master connected before the fence gets no more in. (What
/// they were writing is a temporary file, never a torn one.)
fn end_slave_processes(names: &[String]) -> usize {
    let me = rustix::process::getuid().as_raw();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ended = 0;
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let serving = args.windows(3).any(|w| {
            w[0] == b"slave" && w[1] == b"--root" && names.iter().any(|n| n.as_bytes() == w[2])
        });
        let mine = std::os::unix::fs::MetadataExt::uid(&match p.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        }) == me;
        if serving && mine {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                    ended += 1;
                }
            }
        }
    }
    ended
}

/// Asks the journal process of `place`, if it runs, to close its current
/// file, and waits (bounded) until it has: then every change made before
/// is in closed files. False if it does not run or did not answer.
pub(super) fn roll_journal(place: &PromotedDir) -> bool {
    let pid = place.journal_pid_value();
    if !journal_alive(pid) {
        return false;
    }
    let asked = Timestamp::now().nanos();
    let Some(p) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) else {
        return false;
    };
    if rustix::process::kill_process(p, rustix::process::Signal::USR1).is_err() {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let rolled = std::fs::read_to_string(place.journal_rolled())
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok());
        if rolled.is_some_and(|r| r >= asked) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Whether the journal process `pid` runs.
pub(super) fn journal_alive(pid: Option<u32>) -> bool {
    running_with_arg(pid, JOURNAL_CMD.as_bytes())
}

/// The pid of the journal process of `dir`, started if none runs.
fn ensure_journal(home: &Home, place: &PromotedDir, dir: &Path) -> anyhow::Result<u32> {
    if let Some(pid) = place.journal_pid_value() {
        if journal_alive(Some(pid)) {
            return Ok(pid);
        }
    }
    let log_path = place.journal_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the geo-rep executable")?;
    let mut child = Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .arg(JOURNAL_CMD)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Not stopped by a Ctrl-C at the operator's terminal.
        .process_group(0)
        .spawn()
        .context("launching the journal hook")?;
    let deadline = Instant::now() + JOURNAL_READY;
    loop {
        // This child, or one an interrupted run started (it holds the
        // lock, and this child ends at once).
        if let Some(pid) = place
            .journal_pid_value()
            .filter(|p| journal_alive(Some(*p)))
        {
            return Ok(pid);
        }
        // A child that found another journal holding the lock ends with
        // success; that one's pid file is read at the next turn.
        if let Some(status) = child.try_wait()?.filter(|s| !s.success()) {
            bail!(
                "the journal hook on {} ended ({status}) before it watched the tree; see {}",
                dir.display(),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the journal hook on {} did not watch the tree within {} s; see {}",
                dir.display(),
                JOURNAL_READY.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `geo-rep dr-journal DIR`: runs georep's journal hook on a promoted
/// directory until SIGTERM, writing the pid file once the whole tree is
/// watched. SIGUSR1 closes the current journal file at once (see
/// [`roll_journal`]).
pub fn journal(home: &Home, dir: &Path) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
    let place = PromotedDir::of(home.root(), &dir);
    let journal_dir = place.journal_dir();
    crate::fsutil::create_private_dir(&journal_dir)
        .with_context(|| format!("creating {}", journal_dir.display()))?;
    // One journal process per directory: a second one (started by a
    // `promote` that was cut off and run again) leaves at once.
    let lock_path = place.base().join("journal.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // A journal killed a moment ago may still hold the lock while it
    // exits (its command line is gone before its files are closed), so a
    // busy lock counts as held only once its holder has been seen running
    // for a second.
    let deadline = Instant::now() + JOURNAL_READY;
    let mut seen_running: Option<Instant> = None;
    while rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        seen_running = journal_alive(place.journal_pid_value())
            .then(|| seen_running.unwrap_or_else(Instant::now));
        if seen_running.is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
            || Instant::now() > deadline
        {
            eprintln!("another journal process runs for {}", dir.display());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hook = crate::changelog::Hook::start(crate::changelog::HookConfig::new(&dir, &journal_dir))
        .with_context(|| format!("journal hook on {}", dir.display()))?;
    crate::fsutil::write_private_file(
        &place.journal_pid(),
        std::process::id().to_string().as_bytes(),
    )
    .with_context(|| format!("writing {}", place.journal_pid().display()))?;
    eprintln!(
        "journalling {} into {}",
        dir.display(),
        journal_dir.display()
    );
    let rt = super::lifecycle::runtime()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut shown = None;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                // `failback` asks: every change so far into closed files.
                _ = usr1.recv() => {
                    let asked = Timestamp::now();
                    match tokio::task::block_in_place(|| hook.rollover_now()) {
                        Ok(()) => {
                            let _ = crate::fsutil::write_private_file(
                                &place.journal_rolled(),
                                asked.nanos().to_string().as_bytes(),
                            );
                        }
                        Err(e) => eprintln!("journal hook on {}: rollover: {e}", dir.display()),
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    let e = hook.error();
                    if e.is_some() && e != shown {
                        eprintln!("journal hook on {}: {}", dir.display(), e.clone().unwrap_or_default());
                        shown = e;
                    }
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    hook.stop()
        .with_context(|| format!("stopping the journal hook on {}", dir.display()))?;
    let _ = std::fs::remove_file(place.journal_pid());
    Ok(())
}

pub struct DemoteArgs {
    pub dir: String,
    pub authorized_keys_file: Option<PathBuf>,
}

/// `geo-rep demote DIR`: the directory serves its master again.
pub fn demote(home: &Home, args: DemoteArgs) -> anyhow::Result<()> {
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("slave directory {}", args.dir))?;
    let place = PromotedDir::of(home.root(), &dir);
    // 1. The journal stops (its changes are on the master now).
    if let Some(pid) = place
        .journal_pid_value()
        .filter(|p| journal_alive(Some(*p)))
    {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while journal_alive(Some(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if journal_alive(Some(pid)) {
            bail!(
                "the journal hook of {} (pid {pid}) did not stop",
                dir.display()
            );
        }
    }
    // 2. The fence is lifted.
    let keys_file = keys_file(args.authorized_keys_file)?;
    let restored = match std::fs::read_to_string(&keys_file) {
        Ok(text) => {
            let mut now = text;
            let mut restored = 0;
            for name in names_of(&args.dir, &dir) {
                let r = keys::unfence(&now, &name);
                now = r.text;
                restored += r.changed;
            }
            if restored > 0 {
                replace_keeping_mode(&keys_file, now.as_bytes())?;
            }
            restored
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", keys_file.display())),
    };
    // 3. The mark and the record go.
    let root = std::fs::File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    commits::set_promoted(&root, None)
        .with_context(|| format!("clearing the promotion mark of {}", dir.display()))?;
    match std::fs::remove_dir_all(place.base()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", place.base().display())),
    }
    println!(
        "{} demoted: it serves its master again ({restored} key line(s) restored in {})",
        dir.display(),
        keys_file.display()
    );
    Ok(())
}

/// The slave user's authorized_keys.
fn keys_file(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(f) => Ok(f),
        None => Ok(
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".ssh/authorized_keys"),
        ),
    }
}

/// The names a key line may give the directory: as the session named it,
/// and its real path.
fn names_of(given: &str, real: &Path) -> Vec<String> {
    let real = real.display().to_string();
    if real == given {
        vec![real]
    } else {
        vec![given.to_owned(), real]
    }
}
