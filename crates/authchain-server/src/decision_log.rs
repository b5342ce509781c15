//! The server's decision log: records appended to a file (or written to
//! standard output), one per line, by a thread of its own, so that a slow
//! disk never holds a check. Records that find the queue full (8,192
//! records, or 16 MiB) are dropped and counted in
//! `authchain_decision_log_dropped_total`, as are those after a write
//! failed (with an error in the log), until the file is reopened. SIGUSR1
//! or SIGHUP reopens the file (after a log rotation moved it); shutdown waits for
//! the records queued.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use authchain_core::Error;
use authchain_core::decision_log::{DecisionLog, DecisionSink, Sampling};

use crate::settings::DecisionLogSettings;

/// Records waiting for the writer at most.
const QUEUE: usize = 8192;

/// Bytes waiting for the writer at most.
const QUEUE_BYTES: usize = 16 << 20;

/// The decision log `settings` describe, its file open and its writer
/// started, and the handle that reopens and closes the file. Errors are
/// placed under `decisionLog`.
pub(crate) fn open(settings: &DecisionLogSettings) -> Result<(DecisionLog, LogFile), Error> {
    let at = |e: Error| e.at("decisionLog");
    let sampling = sampling(settings).map_err(at)?;
    let path = (settings.path.as_os_str() != "-").then(|| settings.path.clone());
    let out: Box<dyn Write + Send> = match &path {
        None => Box::new(std::io::stdout()),
        Some(path) => Box::new(append(path).map_err(|e| {
            at(Error::config(format!("cannot open {}: {}", path.display(), e.kind())).at("path"))
        })?),
    };
    let (sender, receiver) = sync_channel(QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let written = queued.clone();
    std::thread::Builder::new()
        .name("authchain-decision-log".into())
        .spawn(move || write_all(receiver, out, path, &written))
        .map_err(|e| at(Error::config(format!("cannot start its writer: {e}"))))?;
    let log = DecisionLog::new(Queue {
        sender: sender.clone(),
        queued,
    });
    let log = match sampling {
        None => log,
        Some(sampling) => log.every_config(sampling).map_err(at)?,
    };
    Ok((log, LogFile { sender }))
}

/// The file at `path`, for appending; one it creates is the server's
/// user's alone (its records name users and addresses). A file whose
/// last line was cut short (a failed write, a crash) gets its line break
/// first, so that the next record is a line of its own.
fn append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // Not a FIFO's (a log shipper's) or a device's; a file the server may
    // write but not read is left as it is.
    let meta = file.metadata()?;
    if meta.is_file() && meta.len() > 0 {
        let mut last = [0u8];
        let read = File::open(path).and_then(|f| f.read_exact_at(&mut last, meta.len() - 1));
        if read.is_ok() && last != *b"\n" {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// The writer's file, as the server handles it: reopened on SIGUSR1 or SIGHUP (after
/// a log rotation moved it), closed at shutdown.
#[derive(Debug)]
pub(crate) struct LogFile {
    sender: SyncSender<Line>,
}

impl LogFile {
    /// The records after this go to a file opened again at the path (the
    /// old one kept on error). A writer that stopped on a failed write
    /// starts again.
    pub(crate) async fn reopen(&self) {
        if !self.send(Line::Reopen, Duration::from_secs(1)).await {
            tracing::warn!("the decision log's queue stays full; not reopened");
        }
    }

    /// Returns once every record before this one is written and flushed,
    /// or after `wait`.
    pub(crate) async fn close(&self, wait: Duration) {
        let (done, closed) = tokio::sync::oneshot::channel();
        let _ = tokio::time::timeout(wait, async {
            if self.send(Line::Close(done), wait).await {
                let _ = closed.await;
            }
        })
        .await;
    }

    /// Sends `line` after the records queued, waiting up to `wait` while
    /// the queue is full (never blocking a thread: a writer stuck on its
    /// output must not hold up a reload or the exit); whether it went.
    async fn send(&self, mut line: Line, wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match self.sender.try_send(line) {
                Ok(()) => return true,
                Err(TrySendError::Full(back)) if tokio::time::Instant::now() < until => {
                    line = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => return false,
            }
        }
    }
}

/// What `settings` say of every AuthConfig, checked (for `authchain
/// check` too).
pub(crate) fn sampling(settings: &DecisionLogSettings) -> Result<Option<Sampling>, Error> {
    let Some(share) = settings.sample else {
        if !settings.headers.is_empty() {
            return Err(Error::config("headers go with sample (every AuthConfig's)").at("headers"));
        }
        return Ok(None);
    };
    let mut sampling = Sampling::default().sample(share);
    for name in &settings.headers {
        sampling = sampling.header(name);
    }
    sampling.validate()?;
    Ok(Some(sampling))
}

/// What the writer gets.
enum Line {
    Record(String),
    Reopen,
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The sink: a queue to the writer thread, bounded in records and bytes.
struct Queue {
    sender: SyncSender<Line>,
    queued: Arc<AtomicUsize>,
}

impl DecisionSink for Queue {
    fn write(&self, record: String) {
        let len = record.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            dropped(1);
            return;
        }
        if self.sender.try_send(Line::Record(record)).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            dropped(1);
        }
    }
}

fn dropped(records: u64) {
    metrics::counter!("authchain_decision_log_dropped_total").increment(records);
}

/// Bytes of records the writer holds before it writes them out, unless
/// the queue empties first.
const WRITE_BYTES: usize = 8 << 10;

/// The writer's output, and the records it holds unwritten.
struct Output {
    /// `None` after a failed write, until a reopen.
    out: Option<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    records: u64,
}

impl Output {
    fn push(&mut self, record: &str) {
        if self.out.is_none() {
            dropped(1);
            return;
        }
        self.pending.extend_from_slice(record.as_bytes());
        self.pending.push(b'\n');
        self.records += 1;
        if self.pending.len() >= WRITE_BYTES {
            self.write_out();
        }
    }

    /// Writes and flushes the records held; after a failure, they are
    /// counted dropped (a part of one may be in the file, which the next
    /// open ends with a line break) and so is every record until a reopen.
    fn write_out(&mut self) {
        if let Some(out) = &mut self.out
            && let Err(e) = out.write_all(&self.pending).and_then(|()| out.flush())
        {
            tracing::error!(error = %e, "cannot write the decision log; decisions are dropped until it is reopened (SIGUSR1 or SIGHUP)");
            dropped(self.records);
            self.out = None;
        }
        self.pending.clear();
        self.records = 0;
    }
}

/// Writes records as they come to `out` (the file at `path`, else
/// standard output), writing them out whenever the queue is empty. After
/// a failed write, records are dropped until a reopen.
fn write_all(
    receiver: Receiver<Line>,
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    queued: &AtomicUsize,
) {
    let mut output = Output {
        out: Some(out),
        pending: Vec::with_capacity(WRITE_BYTES),
        records: 0,
    };
    while let Ok(line) = receiver.recv() {
        let mut next = Some(line);
        while let Some(line) = next {
            match line {
                Line::Record(record) => {
                    queued.fetch_sub(record.len(), Ordering::Relaxed);
                    output.push(&record);
                }
                Line::Reopen => {
                    output.write_out();
                    if let Some(path) = &path {
                        match append(path) {
                            Ok(file) => {
                                output.out = Some(Box::new(file));
                                tracing::info!(path = %path.display(), "decision log reopened");
                            }
                            Err(e) => tracing::error!(
                                path = %path.display(),
                                error = %e,
                                "cannot reopen the decision log; the file open before stays"
                            ),
                        }
                    }
                }
                Line::Close(done) => {
                    output.write_out();
                    let _ = done.send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        output.write_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer over the file at `path` (a symbolic link the test turns),
    /// and the channel to it.
    fn writer(path: &Path) -> (SyncSender<Line>, std::thread::JoinHandle<()>) {
        let (sender, receiver) = sync_channel(16);
        let out: Box<dyn Write + Send> = Box::new(append(path).unwrap());
        let path = path.to_owned();
        let queued = AtomicUsize::new(0);
        let thread = std::thread::spawn(move || write_all(receiver, out, Some(path), &queued));
        (sender, thread)
    }

    fn record(text: &str) -> Line {
        Line::Record(text.to_owned())
    }

    /// After a log rotation moved the file, a reopen writes the next
    /// records to a new file at the path; a close returns once every
    /// record sent before it is in the file.
    #[tokio::test]
    async fn a_reopen_follows_the_path_and_a_close_flushes() {
        let dir = authchain_testkit::ScratchDir::new("decision-log").unwrap();
        let path = dir.path().join("decisions.jsonl");
        let (sender, _thread) = writer(&path);
        sender.send(record("one")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        std::fs::rename(&path, dir.path().join("decisions.jsonl.1")).unwrap();
        sender.send(Line::Reopen).unwrap();
        sender.send(record("two")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("decisions.jsonl.1"), "one\n");
        assert_eq!(read("decisions.jsonl"), "two\n");
        // Each file it made, the first and the reopened, is the user's
        // alone.
        for name in ["decisions.jsonl.1", "decisions.jsonl"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    /// A full disk: the records are dropped, and the writer lives on; once
    /// there is room, a reopen starts the writing again.
    #[tokio::test]
    async fn after_a_failed_write_a_reopen_starts_again() {
        let dir = authchain_testkit::ScratchDir::new("decision-log").unwrap();
        let path = dir.path().join("decisions.jsonl");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let (sender, _thread) = writer(&path);
        sender.send(record("lost")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        std::fs::remove_file(&path).unwrap();
        sender.send(Line::Reopen).unwrap();
        sender.send(record("kept")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept\n");
    }

    /// A file whose last record was cut short (a write that failed part
    /// way, a crash): the next record starts a line of its own, at the
    /// start as after a reopen.
    #[tokio::test]
    async fn a_record_cut_short_leaves_the_next_its_own_line() {
        let dir = authchain_testkit::ScratchDir::new("decision-log").unwrap();
        let path = dir.path().join("decisions.jsonl");
        std::fs::write(&path, "{\"cut\":").unwrap();
        let (sender, _thread) = writer(&path);
        sender.send(record("{}")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        std::fs::write(&path, "{}\n{\"cut\":").unwrap();
        sender.send(Line::Reopen).unwrap();
        sender.send(record("{\"n\":1}")).unwrap();
        let (done, closed) = tokio::sync::oneshot::channel();
        sender.send(Line::Close(done)).unwrap();
        closed.await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{}\n{\"cut\":\n{\"n\":1}\n"
        );
        // A file the server may write but not read (a shipper's): opened
        // all the same.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o200)).unwrap();
        if std::fs::File::open(&path).is_err() {
            assert!(append(&path).is_ok());
        }
    }
}
