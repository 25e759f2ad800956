//! `shoal cert init` and `shoal cert issue`: the cluster CA and certificates
//! signed by it (the work is in `shoal_tls`). Bad names and SANs are bad
//! usage (exit 2); nothing is written then, and nothing is ever overwritten.
//! `cert init` on a CA folder made before cluster keys adds the key only.
//! `cert init --cluster-key` and `cert issue --trust` are for replacing the
//! CA (README, rotate certificates).

use std::process::ExitCode;

use shoal_tls::{CertError, Identity, IssueRequest};

use crate::cli::CertCommand;

/// Whether `dir` holds a CA made before cluster keys existed.
fn has_ca_without_cluster_key(dir: &std::path::Path) -> bool {
    dir.join(shoal_tls::CA_CERT_FILE).exists()
        && dir.join(shoal_tls::CA_KEY_FILE).exists()
        && !dir.join(shoal_tls::CLUSTER_KEY_FILE).exists()
}

pub fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    let done = match command {
        // A CA from before cluster keys gets one; anything else is a new CA.
        CertCommand::Init { dir, cluster_key: None } if has_ca_without_cluster_key(&dir) => {
            shoal_tls::add_cluster_key(&dir).map(|_| {
                println!(
                    "cluster key added: {} (keep it private; copy it into every node's credentials folder)",
                    dir.join(shoal_tls::CLUSTER_KEY_FILE).display()
                );
            })
        }
        CertCommand::Init { dir, cluster_key } => shoal_tls::init_ca_with(&dir, cluster_key.as_deref()).map(|()| {
            println!(
                "cluster CA made: {} (keep {} and {} private)",
                dir.join("ca.pem").display(),
                dir.join("ca.key").display(),
                dir.join(shoal_tls::CLUSTER_KEY_FILE).display()
            );
        }),
        CertCommand::Issue { dir, name, role, out, days, ip, dns, trust } => Identity::new(&name, role.into())
            .and_then(|identity| {
                let out = out.unwrap_or_else(|| dir.join(&name));
                let mut req = IssueRequest::new(identity.clone(), out.clone()).days(days)?;
                req.ips = ip;
                req.dns = dns;
                req.also_trust = trust;
                shoal_tls::issue(&dir, &req)?;
                println!("{identity}: certificate in {} (use it with --tls {})", out.display(), out.display());
                Ok(())
            }),
    };
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(
            e @ (CertError::BadName { .. }
            | CertError::BadDays
            | CertError::ReservedName { .. }
            | CertError::BadClusterKey { .. }
            | CertError::NotCaCertificates { .. }),
        ) => {
            eprintln!("shoal cert: {e}");
            Ok(ExitCode::from(2))
        }
        Err(CertError::Rcgen(e)) => {
            // rcgen refuses names it cannot encode (a DNS SAN with spaces, say).
            eprintln!("shoal cert: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
