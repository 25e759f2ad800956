//! `shoal up`: a whole cluster on this machine, one child process per node.
//!
//! Meta node i (1-based) listens on base-port+i-1 and chunk server j on
//! base-port+10+j-1; each keeps its data in DIR/meta-i or DIR/chunk-j and its
//! log in DIR/meta-i.log or DIR/chunk-j.log. Running `shoal up` again with
//! the same DIR resumes the same cluster with its data. Ctrl-C (or SIGTERM)
//! stops every child; the children also get SIGTERM if `shoal up` itself dies.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_client::Client;

use crate::cli::UpArgs;

/// How long the cluster may take to elect a leader and hear every chunk server.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Node {
    name: String,
    addr: String,
    log: std::path::PathBuf,
    child: Child,
    exited: bool,
}

fn spawn(dir: &Path, name: &str, addr: &str, args: &[String]) -> anyhow::Result<Node> {
    let exe = std::env::current_exe().context("locating the shoal binary")?;
    let log = dir.join(format!("{name}.log"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // SIGTERM to this child when the parent thread exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Node { name: name.to_string(), addr: addr.to_string(), log, child, exited: false })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.replication > args.chunk_nodes {
        eprintln!(
            "shoal up: --replication {} needs at least that many --chunk-nodes (got {})",
            args.replication, args.chunk_nodes
        );
        return Ok(ExitCode::from(2));
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let port = |offset: u32| -> anyhow::Result<String> {
        let p = u32::from(args.base_port) + offset;
        if p > u32::from(u16::MAX) {
            bail!("--base-port {} leaves no room for every node", args.base_port);
        }
        Ok(format!("{}:{p}", args.host))
    };
    let meta_addrs: Vec<String> = (0..args.meta_nodes).map(port).collect::<anyhow::Result<_>>()?;
    let peers: Vec<String> = meta_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let mut nodes = Vec::new();
    for (i, addr) in meta_addrs.iter().enumerate() {
        let name = format!("meta-{}", i + 1);
        let a: Vec<String> = vec![
            "meta".into(),
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            addr.clone(),
            "--peers".into(),
            peers.join(","),
            "--dir".into(),
            args.dir.join(&name).display().to_string(),
            "--chunk-size".into(),
            args.chunk_size.to_string(),
            "--replication".into(),
            args.replication.to_string(),
            "--dead-after".into(),
            format!("{}ms", args.dead_after.as_millis()),
        ];
        nodes.push(spawn(&args.dir, &name, addr, &a)?);
    }
    for j in 0..args.chunk_nodes {
        let name = format!("chunk-{}", j + 1);
        let addr = port(10 + j)?;
        let a: Vec<String> = vec![
            "chunk".into(),
            "--listen".into(),
            addr.clone(),
            "--meta".into(),
            meta_addrs.join(","),
            "--dir".into(),
            args.dir.join(&name).display().to_string(),
        ];
        nodes.push(spawn(&args.dir, &name, &addr, &a)?);
    }

    let ready = wait_ready(&mut nodes, &meta_addrs, args.chunk_nodes).await;
    if let Err(e) = ready {
        stop(&mut nodes);
        return Err(e);
    }
    println!(
        "Shoal is up: {} meta nodes, {} chunk servers, replication {}, data in {}",
        args.meta_nodes,
        args.chunk_nodes,
        args.replication,
        args.dir.display()
    );
    for n in &nodes {
        println!("  {:<8} {:<22} log {}", n.name, n.addr, n.log.display());
    }
    let meta_flag = if meta_addrs.join(",") == crate::cli::DEFAULT_META {
        String::new()
    } else {
        format!("--meta {} ", meta_addrs.join(","))
    };
    println!(
        "Try: shoal {meta_flag}put /etc/hosts /hosts && shoal {meta_flag}cat /hosts    (Ctrl-C stops the cluster)"
    );

    let stopped = crate::servers::terminated();
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {
                for n in nodes.iter_mut().filter(|n| !n.exited) {
                    if let Ok(Some(status)) = n.child.try_wait() {
                        n.exited = true;
                        eprintln!("shoal up: {} exited ({status}); the cluster carries on without it. Log: {}", n.name, n.log.display());
                    }
                }
            }
        }
    }
    eprintln!("shoal up: stopping every node");
    stop(&mut nodes);
    Ok(ExitCode::SUCCESS)
}

async fn wait_ready(nodes: &mut [Node], meta_addrs: &[String], chunk_nodes: u32) -> anyhow::Result<()> {
    let client = Client::connect_with_timeout(meta_addrs, Duration::from_secs(2)).await?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for n in nodes.iter_mut() {
            if let Ok(Some(status)) = n.child.try_wait() {
                bail!("{} exited during start-up ({status}); its log ends with:\n{}", n.name, log_tail(&n.log));
            }
        }
        if let Ok(servers) = client.chunk_servers().await
            && servers.iter().filter(|s| s.state == "alive").count() as u32 >= chunk_nodes
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster was not ready within {}s; see the logs in the data directory", READY_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stop(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(n.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for n in nodes.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = n.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = n.child.kill();
        let _ = n.child.wait();
    }
}
