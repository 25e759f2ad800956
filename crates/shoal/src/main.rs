//! The `shoal` command: parses arguments and hands the work to the libraries.
//!
//! Exit codes: 0 success, 1 the operation failed (one line on stderr),
//! 2 bad usage. A closed stdout (broken pipe) ends the command quietly.
//!
//! Logs go to stderr, as text or (`--log-format json`) one JSON object per
//! line. The chosen format is put in `SHOAL_LOG_FORMAT` before any thread
//! starts, so the `shoal` processes this one spawns (`up`'s and `bench
//! failover`'s nodes) log the same way.
//!
//! Credentials: a client command resolves them once (`--tls`, `$SHOAL_TLS`,
//! `~/.shoal/tls`, or plaintext with `--insecure`) and installs them as the
//! process's transport, which every `Client` it makes then uses; `meta` and
//! `chunk` need `--tls`/`$SHOAL_TLS` (a node certificate) or `--insecure`;
//! `up` and the benches that start their own cluster make their own.

mod admin;
mod bench;
mod cert;
mod cli;
mod config;
mod fs;
mod local;
mod locking;
mod mount;
mod s3;
mod servers;
mod shell;
mod terminal;
mod up;
mod web;

use std::process::ExitCode;

use clap::Parser;
use shoal_client::transport::TLS_ENV;
use shoal_client::{Client, Transport};

use crate::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let args = match config::apply(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("shoal: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let server = matches!(
        cli.command,
        Command::Meta(_) | Command::Chunk(_) | Command::Http { .. } | Command::S3(_) | Command::Mount(_)
    );
    let format_name = match cli.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    // SAFETY: no other thread exists yet (the runtime is built below), so
    // nothing can read the environment while it changes.
    unsafe { std::env::set_var("SHOAL_LOG_FORMAT", format_name) };
    init_logging(if server { "info" } else { "error" }, cli.log_format);
    if !matches!(cli.command, Command::Meta(_)) {
        keep_freed_memory();
    }
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

/// Makes the C allocator keep memory it frees for reuse, in the processes
/// that move file bytes (clients, chunk servers, the gateways and the
/// mount). By default glibc hands a buffer of more than 128 KiB back to the
/// kernel when it is freed, and every new one is faulted in again, a zeroed
/// page at a time: a `shoal bench seq-read --size 1GiB` client took 557,000
/// page faults and 3.1 s of CPU, and 7,700 faults and 1.9 s with buffers
/// below 32 MiB kept in the heap and up to 64 MiB free at its top. What is
/// kept costs resident memory: the client's stayed about 40 MB, but a
/// chunk server's grew from 52-59 MB to 82-107 MB after a mix of
/// workloads (each allocator arena may keep up to 64 MiB free).
/// Meta nodes keep the defaults: they move no file bytes, and their
/// resident memory per file is a measured target.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets the allocator's tunables; it is called
        // before any other thread exists (logging starts none).
        let set = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20) == 1
        };
        if !set {
            tracing::warn!("the allocator refused its settings: large buffers are faulted in afresh");
        }
    }
}

fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(false).init()
        }
        // The event's fields (message included) at the top level of the
        // object, beside timestamp, level and target.
        LogFormat::Json => builder.json().flatten_event(true).with_ansi(false).init(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// A server's transport: its node credentials from `--tls` or `$SHOAL_TLS`
/// (never the client default, which holds an admin's), or `--insecure`.
fn node_transport(cli: &Cli, role: &str) -> anyhow::Result<Result<Transport, ExitCode>> {
    let from_env = || std::env::var_os(TLS_ENV).filter(|v| !v.is_empty()).map(Into::into);
    // An explicit --insecure wins over $SHOAL_TLS.
    let tls = if cli.insecure { None } else { cli.tls.clone().or_else(from_env) };
    if tls.is_none() && !cli.insecure {
        eprintln!(
            "shoal {role}: pass --tls DIR (a node certificate from `shoal cert issue --role node`), or --insecure"
        );
        return Ok(Err(ExitCode::from(2)));
    }
    let transport = shoal_client::transport::resolve(tls.as_deref(), cli.insecure)?;
    // The node's own clients (a meta node's dashboard) use it too.
    shoal_client::transport::set_process(transport.clone());
    Ok(Ok(transport))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let timeout = cli.timeout.unwrap_or(shoal_client::client::DEFAULT_TIMEOUT);
    match &cli.command {
        Command::Cert { .. } | Command::Up(_) | Command::Meta(_) | Command::Chunk(_) => {}
        Command::Bench(args) if args.workload.starts_its_own_cluster() => {}
        // Every other command is a client: credentials from --tls,
        // $SHOAL_TLS or the default folder, for every connection it makes.
        _ => {
            shoal_client::transport::set_process(shoal_client::transport::resolve(cli.tls.as_deref(), cli.insecure)?);
        }
    }
    let connect = || Client::connect_with_timeout(&cli.meta, timeout);
    match cli.command {
        Command::Cert { command } => cert::run(command),
        Command::Up(_) if cli.tls.is_some() => {
            eprintln!("shoal up: makes its own CA and certificates (in DIR/tls); --tls is not for it");
            Ok(ExitCode::from(2))
        }
        Command::Up(args) => up::run(args, cli.insecure).await,
        Command::Meta(ref args) => match node_transport(&cli, "meta")? {
            Ok(transport) => servers::meta(args.clone(), transport).await,
            Err(code) => Ok(code),
        },
        Command::Chunk(ref args) => match node_transport(&cli, "chunk")? {
            Ok(transport) => servers::chunk(args.clone(), cli.meta.clone(), transport).await,
            Err(code) => Ok(code),
        },
        Command::Shell => shell::run(connect().await?, timeout).await,
        Command::Http { listen } => web::run(connect().await?, listen).await,
        Command::S3(args) => s3::run(connect().await?, args).await,
        Command::Mount(args) => mount::run(connect().await?, &args, timeout).await,
        Command::Admin { command } => admin::run(connect().await?, command).await,
        Command::Bench(args) => bench::run(args.options(), &cli.meta, timeout).await,
        Command::Lock { shared, ttl, path, command } => {
            locking::run_locked(&connect().await?, &path, shared, ttl, cli.timeout, &command).await
        }
        other => fs::run(connect().await?, other, timeout).await,
    }
}
