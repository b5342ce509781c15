//! The server's decision log: records appended to a file (or written to
//! standard output), one per line, by a thread of its own, so that a slow
//! disk never holds a check. Records that find the queue full (8,192
//! records, or 16 MiB) are dropped and counted in
//! `authchain_decision_log_dropped_total`, as are those after the output
//! failed (the writer stops, with an error in the log).

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use authchain_core::Error;
use authchain_core::decision_log::{DecisionLog, DecisionSink, Sampling};

use crate::settings::DecisionLogSettings;

/// Records waiting for the writer at most.
const QUEUE: usize = 8192;

/// Bytes waiting for the writer at most.
const QUEUE_BYTES: usize = 16 << 20;

/// The decision log `settings` describe, its file open and its writer
/// started. Errors are placed under `decisionLog`.
pub(crate) fn open(settings: &DecisionLogSettings) -> Result<DecisionLog, Error> {
    let at = |e: Error| e.at("decisionLog");
    let sampling = sampling(settings).map_err(at)?;
    let out: Box<dyn Write + Send> = if settings.path.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.path)
            .map_err(|e| {
                at(Error::config(format!(
                    "cannot open {}: {}",
                    settings.path.display(),
                    e.kind()
                ))
                .at("path"))
            })?;
        Box::new(file)
    };
    let (sender, receiver) = sync_channel(QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    let written = queued.clone();
    std::thread::Builder::new()
        .name("authchain-decision-log".into())
        .spawn(move || write_all(receiver, out, &written))
        .map_err(|e| at(Error::config(format!("cannot start its writer: {e}"))))?;
    let log = DecisionLog::new(Queue { sender, queued });
    match sampling {
        None => Ok(log),
        Some(sampling) => log.every_config(sampling).map_err(at),
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

/// The sink: a queue to the writer thread, bounded in records and bytes.
struct Queue {
    sender: SyncSender<String>,
    queued: Arc<AtomicUsize>,
}

impl DecisionSink for Queue {
    fn write(&self, record: String) {
        let len = record.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            metrics::counter!("authchain_decision_log_dropped_total").increment(1);
            return;
        }
        // Full, or the writer is gone (its output failed).
        if self.sender.try_send(record).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            metrics::counter!("authchain_decision_log_dropped_total").increment(1);
        }
    }
}

/// Writes records as they come, flushing whenever the queue is empty.
fn write_all(receiver: Receiver<String>, out: Box<dyn Write + Send>, queued: &AtomicUsize) {
    let mut out = BufWriter::new(out);
    while let Ok(record) = receiver.recv() {
        let mut next = Some(record);
        while let Some(record) = next {
            queued.fetch_sub(record.len(), Ordering::Relaxed);
            if out
                .write_all(record.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .is_err()
            {
                tracing::error!("cannot write the decision log; decisions are no longer logged");
                return;
            }
            next = receiver.try_recv().ok();
        }
        if out.flush().is_err() {
            tracing::error!("cannot write the decision log; decisions are no longer logged");
            return;
        }
    }
}
