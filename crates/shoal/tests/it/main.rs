//! Shoal's integration tests: one test binary (so one link), one module per
//! band. Each test starts real `shoal` processes on loopback, in temporary
//! directories, through [`common`].
//!
//! Bands: t10 basic operations, t20 lifecycle, t35 TLS and identities, t36
//! chunk capabilities, t37 separate hosts (network namespaces), t40 bad
//! input, t50 failures,
//! t55 leader failover (`shoal bench failover`), t56 the bench JSON contract,
//! t57 new small files in one meta entry,
//! t60 chaos, t61 membership and snapshots, t70 locks, t80 self-healing, t90
//! regressions (one test per fixed bug, with its cause), t91 upgrades, t92
//! metrics (`/metrics` on every node's HTTP port), t93 observability (`admin
//! top`, JSON logs), t95 the web dashboard and its JSON API (in headless
//! Chromium), t96 the S3 gateway (boto3, the AWS CLI, rclone), t97 the FUSE
//! mount (shell programs through the kernel), t98 flock(2) and fcntl(2)
//! through the mount as cluster locks.
//!
//! Run one band with a filter, which matches module and test names:
//! `cargo test -p shoal --test it t60`.
//!
//! # Adding tests
//! A new band or topic is a file `tNN_topic.rs` in this directory: it opens
//! with a `//!` doc saying what it covers, imports `use crate::common::*;`,
//! names its tests `tNN_...`, and gets a `mod tNN_topic;` line below. A
//! helper that more than one module needs goes in `common`; one that only its
//! module needs stays there. (A file written as a test binary of its own,
//! with `mod common;` and `use common::*;`, moves here by dropping the `mod`
//! line and importing from `crate::common` instead.)
//!
//! # One process, many tests
//! The tests run as threads of this process, as many at once as
//! `--test-threads` (by default the number of CPUs). What they share:
//! - Ports: every node's port comes from `common::free_port`, which hands
//!   out each port once per process, outside the kernel's ephemeral range.
//! - Network namespaces and nftables: `common::netns::Net` holds a
//!   process-wide lock while it exists, so two tests that partition never
//!   overlap; everything else may run beside them.
//! - Environment, current directory, signal handlers: no test changes them;
//!   children get their settings per command, and signals go to pids.

mod common;

mod t10_basic;
mod t20_lifecycle;
mod t35_tls;
mod t36_capabilities;
mod t37_hosts;
mod t40_bad_input;
mod t50_failures;
mod t55_failover;
mod t56_bench;
mod t57_small_files;
mod t60_chaos;
mod t61_membership;
mod t70_locks;
mod t80_healing;
mod t90_regressions;
mod t91_upgrade;
mod t92_metrics;
mod t93_top;
mod t95_dashboard;
mod t96_s3;
mod t97_mount;
mod t98_mount_locks;
