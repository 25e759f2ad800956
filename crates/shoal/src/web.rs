//! `shoal http`: the web dashboard and JSON API (`shoal-http`) as a front end
//! of its own, served from a client of the cluster given with `--meta`, until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use shoal_client::Client;

pub async fn run(client: Client, listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "dashboard serving");
    println!("Shoal dashboard: http://{addr}/");
    let app = shoal_http::router(client);
    shoal_http::serve::serve(listener, app, shoal_http::serve::Limits::HTTP, crate::servers::terminated())
        .await
        .context("serving http")?;
    Ok(ExitCode::SUCCESS)
}
