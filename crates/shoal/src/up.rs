//! `shoal up`: a whole cluster on this machine, one child process per node.
//!
//! Meta node i (1-based) listens on base-port+i-1 and chunk server j on
//! base-port+10+j-1; their HTTP ports (`--http`: metrics, and on meta the
//! dashboard) are base-port+20+i-1 and base-port+30+j-1. Each keeps its data in DIR/meta-i or DIR/chunk-j and its
//! log in DIR/meta-i.log or DIR/chunk-j.log. Running `shoal up` again with
//! the same DIR resumes the same cluster with its data. Ctrl-C (or SIGTERM)
//! stops every child; the children also get SIGTERM if `shoal up` itself dies.
//! With `--s3` it also serves the S3 gateway, with `--mount DIR` it mounts
//! the cluster at DIR (unmounted before the nodes stop).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use crate::cli::UpArgs;
use crate::local::{LocalCluster, Spec};

/// How long the cluster may take to elect a leader and hear every chunk server.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.replication > args.chunk_nodes {
        eprintln!(
            "shoal up: --replication {} needs at least that many --chunk-nodes (got {})",
            args.replication, args.chunk_nodes
        );
        return Ok(ExitCode::from(2));
    }
    let port = |offset: u32| -> anyhow::Result<String> {
        let p = u32::from(args.base_port) + offset;
        if p > u32::from(u16::MAX) {
            bail!("--base-port {} leaves no room for every node", args.base_port);
        }
        Ok(format!("{}:{p}", args.host))
    };
    let meta_addrs: Vec<String> = (0..args.meta_nodes).map(port).collect::<anyhow::Result<_>>()?;
    let chunk_addrs: Vec<String> = (0..args.chunk_nodes).map(|j| port(10 + j)).collect::<anyhow::Result<_>>()?;
    let meta_http_addrs: Vec<String> = (0..args.meta_nodes).map(|i| port(20 + i)).collect::<anyhow::Result<_>>()?;
    let chunk_http_addrs: Vec<String> = (0..args.chunk_nodes).map(|j| port(30 + j)).collect::<anyhow::Result<_>>()?;
    let spec = Spec {
        dir: args.dir.clone(),
        meta_addrs: meta_addrs.clone(),
        chunk_addrs,
        meta_http_addrs: meta_http_addrs.clone(),
        chunk_http_addrs,
        chunk_size_bytes: args.chunk_size,
        replication: args.replication,
        dead_after: args.dead_after,
        meta_flags: vec!["--repair-rate".into(), args.repair_rate.to_string()],
        chunk_flags: vec!["--scrub-rate".into(), args.scrub_rate.to_string()],
    };
    // Dropping the cluster (also on an early return) stops every node.
    let mut cluster = LocalCluster::start(&spec)?;
    cluster.wait_ready(READY_TIMEOUT).await?;
    println!(
        "Shoal is up: {} meta nodes, {} chunk servers, replication {}, data in {}",
        args.meta_nodes,
        args.chunk_nodes,
        args.replication,
        args.dir.display()
    );
    for n in cluster.metas.iter().chain(&cluster.chunks) {
        let http = n.http.as_deref().map(|h| format!("http://{h}/metrics")).unwrap_or_default();
        println!("  {:<8} {:<22} {:<38} log {}", n.name, n.addr, http, n.log.display());
    }
    println!("Dashboard: http://{}/", meta_http_addrs[0]);
    let meta_flag = if meta_addrs.join(",") == crate::cli::DEFAULT_META {
        String::new()
    } else {
        format!("--meta {} ", meta_addrs.join(","))
    };
    println!(
        "Try: shoal {meta_flag}put /etc/hosts /hosts && shoal {meta_flag}cat /hosts    (Ctrl-C stops the cluster)"
    );

    if let Some(listen) = args.s3 {
        let client = shoal_client::Client::connect(&meta_addrs).await?;
        let (config, listener) =
            crate::s3::configure(listen, None, None, None, crate::s3::UPLOAD_MAX_AGE_DEFAULT).await?;
        println!(
            "S3: http://{}/  access key {}  secret key {}",
            listener.local_addr()?,
            config.credentials[0].access_key,
            config.credentials[0].secret_key
        );
        tokio::spawn(async move {
            if let Err(e) = shoal_s3::serve(client, listener, config).await {
                eprintln!("shoal up: the S3 gateway stopped: {e}");
            }
        });
    }

    let mounted = match &args.mount {
        Some(dir) => {
            let client = shoal_client::Client::connect(&meta_addrs).await?;
            let opts = shoal_fuse::MountOptions::default();
            let mounted = shoal_fuse::mount(client, dir, opts).await?;
            println!("Mounted at {}", dir.display());
            Some(mounted)
        }
        None => None,
    };

    let stopped = crate::servers::terminated();
    tokio::pin!(stopped);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = tick.tick() => {
                for n in cluster.nodes_mut() {
                    if let Some(status) = n.exited() {
                        eprintln!("shoal up: {} exited ({status}); the cluster carries on without it. Log: {}", n.name, n.log.display());
                    }
                }
            }
        }
    }
    if let Some(mounted) = mounted {
        // Before the nodes stop: held writes still need them.
        if let Err(e) = mounted.unmount().await {
            eprintln!("shoal up: {e}");
        }
    }
    eprintln!("shoal up: stopping every node");
    cluster.stop();
    Ok(ExitCode::SUCCESS)
}
