//! `chatbench` binary: parse flags, run the command, and make sure no child
//! process or container outlives it (Ctrl-C drops the running future, whose
//! guards kill their processes and remove their containers; a panic hook and
//! a final sweep catch the rest).

use chatbench::cli::{Cli, EXIT_INFRA, EXIT_INTERRUPTED, dispatch};
use chatbench::process::{install_panic_hook, kill_all_children};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    install_panic_hook(chatbench::provider::docker::remove_own_blocking);
    let cli = Cli::parse();
    let default_level = if cli.quiet { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| format!("{default_level},mongodb=warn").into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INFRA);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = dispatch(cli) => code,
            _ = interrupted() => {
                eprintln!("interrupted: tearing down backends and nodes");
                ExitCode::from(EXIT_INTERRUPTED)
            }
        }
    });
    kill_all_children();
    // Containers whose handles never came back (Ctrl-C mid-creation).
    runtime.block_on(async {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), chatbench::provider::docker::remove_own()).await;
    });
    code
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
