//! The `shoal` command: parses arguments and hands the work to the libraries.
//!
//! Exit codes: 0 success, 1 the operation failed (one line on stderr),
//! 2 bad usage. A closed stdout (broken pipe) ends the command quietly.

mod admin;
mod bench;
mod cli;
mod fs;
mod local;
mod locking;
mod servers;
mod shell;
mod up;
mod web;

use std::process::ExitCode;

use clap::Parser;
use shoal_client::Client;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let server = matches!(cli.command, Command::Meta(_) | Command::Chunk(_) | Command::Http { .. });
    init_logging(if server { "info" } else { "error" });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let timeout = cli.timeout.unwrap_or(shoal_client::client::DEFAULT_TIMEOUT);
    let connect = || Client::connect_with_timeout(&cli.meta, timeout);
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Meta(args) => servers::meta(args).await,
        Command::Chunk(args) => servers::chunk(args, cli.meta).await,
        Command::Shell => shell::run(connect().await?, timeout).await,
        Command::Http { listen } => web::run(connect().await?, listen).await,
        Command::Admin { command } => admin::run(connect().await?, command).await,
        Command::Bench(args) => bench::run(args.options(), &cli.meta, timeout).await,
        Command::Lock { shared, ttl, path, command } => {
            locking::run_locked(&connect().await?, &path, shared, ttl, cli.timeout, &command).await
        }
        other => fs::run(connect().await?, other, timeout).await,
    }
}
