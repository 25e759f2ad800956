//! The test process's certificates: one cluster CA, a node certificate
//! every server of every test cluster uses, and an admin's and a user's for
//! clients. Made once (on first use) in the test target's temporary folder
//! and kept there for later runs; a fresh one is made if it is missing.
//!
//! The in-process clients (`Client::connect*`) get the admin's credentials
//! as the process transport; spawned commands get theirs through
//! `$SHOAL_TLS` ([`shoal_command`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use shoal_tls::{Identity, IssueRequest, Role};

pub struct Pki {
    pub root: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.root.join("ca")
    }
    pub fn node(&self) -> PathBuf {
        self.root.join("node")
    }
    pub fn admin(&self) -> PathBuf {
        self.root.join("admin")
    }
    pub fn user(&self) -> PathBuf {
        self.root.join("user")
    }
}

/// Makes a CA in `root/ca` and `node`, `admin` and `user` credentials.
pub fn make_pki(root: &Path) {
    let ca = root.join("ca");
    shoal_tls::init_ca(&ca).unwrap();
    for (name, role) in [("node", Role::Node), ("admin", Role::Admin), ("user", Role::User)] {
        let req = IssueRequest::new(Identity::new(name, role).unwrap(), root.join(name));
        shoal_tls::issue(&ca, &req).unwrap();
    }
}

/// The process's certificates (see the module docs).
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-pki");
        // A folder from before cluster keys has none for the node: make it again.
        let complete = root.join("user").join(shoal_tls::CERT_FILE).exists()
            && root.join("node").join(shoal_tls::CLUSTER_KEY_FILE).exists();
        if !complete {
            // Made aside and renamed into place, so a concurrent test
            // process never sees half of one.
            let aside = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("it-pki.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&aside);
            make_pki(&aside);
            let _ = std::fs::remove_dir_all(&root);
            if std::fs::rename(&aside, &root).is_err() {
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        let pki = Pki { root };
        let admin = shoal_tls::Transport::load(&pki.admin()).expect("the test admin's credentials");
        shoal_client::transport::set_process(admin);
        pki
    })
}

/// The credentials a `shoal ARGS` command uses: a node's for `meta` and
/// `chunk`, the admin's for everything else.
pub fn credentials_for<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> PathBuf {
    // The subcommand is the first argument that is no flag and no flag's value.
    let mut it = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned());
    let mut subcommand = None;
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "--meta" | "--timeout" | "--log-format" | "--tls") {
            it.next();
        } else if !a.starts_with("--") {
            subcommand = Some(a);
            break;
        }
    }
    match subcommand.as_deref() {
        Some("meta" | "chunk") => pki().node(),
        _ => pki().admin(),
    }
}

/// `shoal ARGS`, with the credentials [`credentials_for`] picks in `$SHOAL_TLS`.
pub fn shoal_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(super::SHOAL);
    cmd.args(args).env("SHOAL_TLS", credentials_for(args));
    cmd
}
