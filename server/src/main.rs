//! `wshub-server`: parses flags, sets up logs and the open-file limit, binds
//! the listener and runs the server until SIGINT/SIGTERM (see `server.rs`).

mod cluster;
mod config;
mod http;
mod metrics;
mod server;
mod state;
mod ws;

// Shared with the fuzz targets through the library (`lib.rs`).
use wshub_server::{auth, handshake};

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::state::State;

/// Open files one server process should be able to hold: the 19,000
/// connections of the benchmark target, plus room for everything else.
const WANTED_OPEN_FILES: u64 = 20_000;

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One clear line, no usage dump and no backtrace.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("wshub-server: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if let Err(msg) = config.validate() {
        eprintln!("wshub-server: {msg}");
        return ExitCode::from(2);
    }

    // Log lines are handed to a writer thread: a connection's task never
    // waits on a write to stderr (two lines per connection add up under a
    // burst of connects). The guard flushes what is left when main returns.
    // The thread flushes after each batch it takes from its queue, so a
    // buffer in front of stderr costs no delay and makes a batch one write
    // instead of one per line (under a burst of connects the writes were 7 %
    // of the server's CPU).
    let stderr = std::io::BufWriter::with_capacity(LOG_BUFFER, std::io::stderr());
    let (writer, _log_guard) = tracing_appender::non_blocking(stderr);
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // Two runtimes. WebSocket connections (and their upgrades) run on the
    // first, one worker per core. Every other HTTP connection (the API,
    // health, metrics) runs on the second, threads of its own: behind a
    // fan-out of 10,000 connections every worker's run queue holds
    // thousands of writers, and an API request that waited its turn there
    // would wait for all of them (issue 13: a push's p99 was two seconds).
    // On threads of its own it only shares the CPU, which the kernel
    // divides fairly. `server::accept_loop` tells them apart.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("wshub-ws")
        .enable_all()
        .build();
    let http_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("wshub-http")
        .enable_all()
        .build();
    let (runtime, http_runtime) = match (runtime, http_runtime) {
        (Ok(rt), Ok(http)) => (rt, http),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("wshub-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(start(config, http_runtime.handle().clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wshub-server: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Idle keep-alive connections may still be open there: not waited for.
    http_runtime.shutdown_background();
    code
}

async fn start(config: Config, http: tokio::runtime::Handle) -> anyhow::Result<()> {
    raise_open_file_limit();
    if config.insecure_dev {
        tracing::warn!(
            "INSECURE DEV MODE: anyone can connect as any user with ?userId=, join any group \
             and call the API without a key. Never expose this server."
        );
    }
    let listener = server::bind(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let signal = server::ShutdownSignal::listen()
        .map_err(|e| anyhow::anyhow!("cannot listen for SIGINT/SIGTERM: {e}"))?;
    let state = State::new(config, CancellationToken::new())?;
    // Last: whoever waits for this line may connect and signal at once.
    tracing::info!("listening on {addr}");
    server::run(listener, state, signal, &http).await;
    Ok(())
}

/// Bytes of log lines the log thread gathers into one write to stderr.
const LOG_BUFFER: usize = 64 * 1024;

/// Raises the soft open-file limit as far as the hard limit allows, and says
/// so when that is less than the server needs.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < WANTED_OPEN_FILES => tracing::warn!(
            limit,
            wanted = WANTED_OPEN_FILES,
            "the open-file hard limit is lower than the server needs; raise it (ulimit -Hn)"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}
