//! `shoal cert init` and `shoal cert issue`: the cluster CA and certificates
//! signed by it (the work is in `shoal_tls`). Bad names and SANs are bad
//! usage (exit 2); nothing is written then, and nothing is ever overwritten.

use std::process::ExitCode;

use shoal_tls::{CertError, Identity, IssueRequest};

use crate::cli::CertCommand;

pub fn run(command: CertCommand) -> anyhow::Result<ExitCode> {
    let done = match command {
        CertCommand::Init { dir } => shoal_tls::init_ca(&dir).map(|()| {
            println!(
                "cluster CA made: {} (keep {} private)",
                dir.join("ca.pem").display(),
                dir.join("ca.key").display()
            );
        }),
        CertCommand::Issue { dir, name, role, out, days, ip, dns } => {
            Identity::new(&name, role.into()).and_then(|identity| {
                let out = out.unwrap_or_else(|| dir.join(&name));
                let mut req = IssueRequest::new(identity.clone(), out.clone()).days(days)?;
                req.ips = ip;
                req.dns = dns;
                shoal_tls::issue(&dir, &req)?;
                println!("{identity}: certificate in {} (use it with --tls {})", out.display(), out.display());
                Ok(())
            })
        }
    };
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ (CertError::BadName { .. } | CertError::BadDays | CertError::ReservedName { .. })) => {
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
