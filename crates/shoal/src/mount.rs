//! `shoal mount`: the FUSE mount (`shoal-fuse`) of the cluster given with
//! `--meta`, in the foreground until SIGINT or SIGTERM. Also used by
//! `shoal up --mount`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shoal_client::Client;
use shoal_fuse::MountOptions;

use crate::cli::MountArgs;

/// The mount's options from the command line and the client's timeout.
pub fn options(args: &MountArgs, timeout: Duration) -> MountOptions {
    MountOptions {
        read_only: args.read_only,
        allow_other: args.allow_other,
        attr_ttl: Duration::from_millis(args.attr_ttl_ms),
        entry_ttl: Duration::from_millis(args.entry_ttl_ms),
        timeout,
        lock_ttl: args.lock_ttl,
        unlinked_ttl: args.unlinked_ttl,
        cluster_fcntl_locks: args.cluster_fcntl_locks,
        ..MountOptions::default()
    }
}

pub async fn run(client: Client, args: &MountArgs, timeout: Duration) -> anyhow::Result<ExitCode> {
    let mounted = shoal_fuse::mount(client, &args.mountpoint, options(args, timeout)).await?;
    eprintln!("shoal mount: {} is mounted (SIGINT or SIGTERM unmounts it)", args.mountpoint.display());
    mounted
        .run_until(shoal_fuse::signalled())
        .await
        .with_context(|| format!("unmounting {}", args.mountpoint.display()))?;
    Ok(ExitCode::SUCCESS)
}
