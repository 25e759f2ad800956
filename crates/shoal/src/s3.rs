//! `shoal s3`: the S3 gateway (`shoal-s3`) as a front end of its own, for the
//! cluster given with `--meta`, until SIGINT or SIGTERM. Also used by
//! `shoal up --s3`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_client::Client;
use shoal_s3::{Config, Credential};
use tokio::net::TcpListener;

use crate::cli::S3Args;

/// What `shoal up --s3` uses for `--upload-max-age`.
pub const UPLOAD_MAX_AGE_DEFAULT: Duration = Duration::from_secs(24 * 3600);

/// Checks the credentials and binds the listener. With no keys at all, `up`
/// makes a pair up (and prints it); `shoal s3` refuses to run without one.
pub async fn configure(
    listen: SocketAddr,
    access_key: Option<String>,
    secret_key: Option<String>,
    key_file: Option<PathBuf>,
    upload_max_age: Duration,
) -> anyhow::Result<(Config, TcpListener)> {
    let access_key = access_key.or_else(|| std::env::var("SHOAL_S3_ACCESS_KEY").ok());
    let secret_key = secret_key.or_else(|| std::env::var("SHOAL_S3_SECRET_KEY").ok());
    let mut credentials = match (access_key, secret_key) {
        (Some(a), Some(s)) => vec![Credential { access_key: a, secret_key: s, tls: None }],
        (None, None) => Vec::new(),
        _ => bail!(
            "give both an access key and a secret key (--access-key/--secret-key or $SHOAL_S3_ACCESS_KEY/$SHOAL_S3_SECRET_KEY)"
        ),
    };
    if let Some(f) = &key_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read the key file {}", f.display()))?;
        credentials
            .extend(shoal_s3::server::parse_key_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
    }
    if credentials.is_empty() {
        credentials.push(Credential {
            access_key: format!("SHOAL{:015X}", rand::random::<u64>() >> 4),
            secret_key: format!("{:032x}{:08x}", rand::random::<u128>(), rand::random::<u32>()),
            tls: None,
        });
    }
    // Before anything is bound or announced: a bad key file stops here.
    shoal_s3::server::check_credentials(&credentials, shoal_client::transport::process().is_tls())
        .map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    Ok((Config { listen, credentials, upload_max_age }, listener))
}

pub async fn run(client: Client, args: S3Args) -> anyhow::Result<ExitCode> {
    if args.access_key.is_none() && args.key_file.is_none() && std::env::var("SHOAL_S3_ACCESS_KEY").is_err() {
        eprintln!(
            "shoal s3: give --access-key and --secret-key (or $SHOAL_S3_ACCESS_KEY and $SHOAL_S3_SECRET_KEY), or --key-file"
        );
        return Ok(ExitCode::from(2));
    }
    let (config, listener) =
        configure(args.listen, args.access_key, args.secret_key, args.key_file, args.upload_max_age).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, users = config.credentials.len(), "S3 gateway serving");
    println!("Shoal S3 gateway: http://{addr}/");
    tokio::select! {
        r = shoal_s3::serve(client, listener, config) => r.context("serving S3")?,
        _ = crate::servers::terminated() => {}
    }
    Ok(ExitCode::SUCCESS)
}
