//! The command line: `authchain serve`, `authchain check`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use authchain_core::{Error, PluginRegistry};
use clap::{Parser, Subcommand};

use crate::Server;
use crate::settings::{DEFAULT_CONFIG, Loaded};

/// External authorization for Envoy, nginx, Traefik and Caddy: a chain of
/// auth steps over gRPC ext_authz and HTTP forward auth.
#[derive(Debug, Parser)]
#[command(name = "authchain", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the checks, the admin endpoints, and reload on change.
    Serve {
        /// The config file; without it, the embedded default
        /// (`authchain default-config` prints it).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Read and build every AuthConfig without serving: print one line per
    /// AuthConfig, or every problem with its place (exit status 1).
    Check {
        /// The config file; without it and without FILEs, the embedded
        /// default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// AuthConfig files, as `authConfigFiles` would name them (Gloo
        /// manifests, say), checked besides the config file's.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the embedded default config, to copy and edit.
    DefaultConfig,
}

/// The `authchain` command line over `registry`: what the binary's `main`
/// is, and what a program of your own with your plugins registered calls.
/// It reports panics (a step's are caught and fail closed) through the
/// log with their place, not their message, which may hold request data.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let mut registry = authchain_server::default_registry();
///     // registry.register(MyPlugin);
///     authchain_server::main_with(registry)
/// }
/// ```
pub fn main_with(registry: PluginRegistry) -> ExitCode {
    let cli = Cli::parse();
    crate::logging::report_panics_without_message();
    match cli.command {
        Command::Check { config, mut files } => {
            let config = match config.map(|c| enter_config_dir(&c, &mut files)) {
                None => None,
                Some(Ok(config)) => Some(config),
                Some(Err(code)) => return code,
            };
            check(&registry, config, &files)
        }
        Command::DefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Serve { config } => {
            let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
                return ExitCode::FAILURE;
            };
            let mut server = Server::new(registry);
            if let Some(path) = config {
                match enter_config_dir(&path, &mut []) {
                    Ok(path) => server = server.config_file(path),
                    Err(code) => return code,
                }
            }
            match runtime.block_on(server.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    match e.config_error() {
                        Some(e) => print_problems(e),
                        None => eprintln!("authchain: {e}"),
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Makes the directory of the config file the working directory, so that
/// every path in it (a step's `keysFile`, the decision log's `path`) is
/// read relative to the config file, whatever directory the binary was
/// started in; `others`, paths given on the command line, are made
/// absolute first. The config file's own path is returned absolute.
fn enter_config_dir(config: &Path, others: &mut [PathBuf]) -> Result<PathBuf, ExitCode> {
    let entered = (|| {
        let config = std::path::absolute(config)?;
        for path in others.iter_mut() {
            *path = std::path::absolute(&*path)?;
        }
        if let Some(dir) = config.parent() {
            std::env::set_current_dir(dir)?;
        }
        Ok::<_, std::io::Error>(config)
    })();
    entered.map_err(|e| {
        eprintln!(
            "authchain: cannot enter the directory of {}: {e}",
            config.display()
        );
        ExitCode::FAILURE
    })
}

/// The runtime `builder` makes, with I/O and timers; `None` once the
/// failure is printed.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("authchain: cannot start the runtime: {e}");
            None
        }
    }
}

fn check(registry: &PluginRegistry, config: Option<PathBuf>, files: &[PathBuf]) -> ExitCode {
    // Some steps set up their clients when built (a gRPC channel), which
    // needs a runtime; nothing is started or connected.
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let built = {
        let _entered = runtime.enter();
        Loaded::check(config.as_deref(), files, registry)
    };
    match built {
        Ok((loaded, generation)) => {
            let mut out = std::io::stdout().lock();
            for config in &loaded.configs {
                let steps: Vec<&str> = generation
                    .chain(config.name())
                    .map(|c| c.step_names().collect())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "ok {}: {} step{} ({}) from {}",
                    config.name(),
                    steps.len(),
                    if steps.len() == 1 { "" } else { "s" },
                    steps.join(", "),
                    config.origin()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(&e);
            ExitCode::FAILURE
        }
    }
}

fn print_problems(e: &Error) {
    let mut err = std::io::stderr().lock();
    let mut count = 0;
    for problem in e.problems() {
        count += 1;
        let _ = writeln!(err, "error: {problem}");
    }
    let _ = writeln!(
        err,
        "authchain: {count} problem{} in the config",
        if count == 1 { "" } else { "s" }
    );
}
