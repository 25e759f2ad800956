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
//!
//! TLS is on unless `--insecure`: the CA and every node's certificate are
//! made in DIR/tls on the first start (see `local`), and the admin's
//! credentials are copied to the default client folder (`$HOME/.shoal/tls`),
//! so client commands on this machine reach the cluster without flags. The
//! last `shoal up` started owns that folder, as it owns the default ports.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use crate::cli::UpArgs;
use crate::local::{LocalCluster, Spec};

/// How long the cluster may take to elect a leader and hear every chunk server.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(args: UpArgs, insecure: bool) -> anyhow::Result<ExitCode> {
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
        meta_flags: ["--repair-rate".into(), args.repair_rate.to_string()]
            .into_iter()
            .chain(args.no_read_lease.then(|| "--no-read-lease".to_string()))
            .collect(),
        chunk_flags: vec!["--scrub-rate".into(), args.scrub_rate.to_string()],
        tls: !insecure,
    };
    // A node that cannot bind its port dies, but another cluster already on
    // those ports would answer the readiness check in its place.
    let taken = crate::local::addrs_in_use(
        spec.meta_addrs.iter().chain(&spec.chunk_addrs).chain(&spec.meta_http_addrs).chain(&spec.chunk_http_addrs),
    );
    if !taken.is_empty() {
        bail!(
            "already in use: {} (is another `shoal up` running? stop it, or pick other ports with --base-port)",
            taken.join(", ")
        );
    }
    // Dropping the cluster (also on an early return) stops every node.
    let mut cluster = LocalCluster::start(&spec)?;
    cluster.wait_ready(READY_TIMEOUT).await?;
    let credentials = match cluster.transport.is_tls() {
        true => publish_admin_credentials(&args.dir)?,
        false => "none: plaintext (--insecure); clients need --insecure too".to_string(),
    };
    shoal_client::transport::set_process(cluster.transport.clone());
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
    println!("TLS credentials of the admin client: {credentials}");
    let mut meta_flag = if meta_addrs.join(",") == crate::cli::DEFAULT_META {
        String::new()
    } else {
        format!("--meta {} ", meta_addrs.join(","))
    };
    if insecure {
        meta_flag.push_str("--insecure ");
    }
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

/// Copies the cluster's admin credentials into the default client folder
/// (replacing what a previous `shoal up` left there) and says where they are.
fn publish_admin_credentials(dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let from = crate::local::admin_tls_dir(dir);
    let Some(to) = shoal_tls::default_client_dir() else {
        return Ok(format!("{} ($HOME is not set: pass --tls {} to client commands)", from.display(), from.display()));
    };
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    for file in [shoal_tls::CERT_FILE, shoal_tls::KEY_FILE, shoal_tls::CA_CERT_FILE] {
        let target = to.join(file);
        // Remove first, so the key keeps the mode 0600 its copy gets from the source.
        let _ = std::fs::remove_file(&target);
        std::fs::copy(from.join(file), &target)
            .with_context(|| format!("copying credentials to {}", target.display()))?;
    }
    Ok(format!("{} (copied to {}, where client commands look by default)", from.display(), to.display()))
}
