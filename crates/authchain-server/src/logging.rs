//! Structured logs with `tracing`, as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber, unless the program has one already.
/// `RUST_LOG` wins over the configured level.
pub(crate) fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|e| {
            eprintln!(
                "authchain: log.level `{}` is not a filter ({e}); using info",
                settings.level
            );
            EnvFilter::new("info")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let builder = builder.with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// Reports panics through the log, with their place but not their
/// message: a panic caught in a step (a plugin's, a policy builtin's) may
/// carry what the request held, a credential among it, and the default
/// report prints it to standard error as it is.
pub(crate) fn report_panics_without_message() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        if tracing::dispatcher::has_been_set() {
            tracing::error!(%place, thread, "panicked (the message is not logged: it may hold request data)");
        } else {
            eprintln!(
                "authchain: thread {thread} panicked at {place} (the message is not shown: it may hold request data)"
            );
        }
    }));
}
