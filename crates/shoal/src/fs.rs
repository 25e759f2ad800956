//! The file commands: ls, mkdir, create, rm, mv, put, get, cat, write, append, stat, setrep.
//!
//! `write`, `append` and `put` hold the target's exclusive lock while they
//! write (see [`crate::locking`]), and their writes carry its fencing token.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shoal_client::new_file::WRITE_NEW_WHOLE_MAX_BYTES;
use shoal_client::report::{self, EntryReport, join, kind};
use shoal_client::{Client, DirEntry};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::cli::Command;
use crate::locking;

/// Largest piece `get` and `cat` read at once.
const READ_PIECE_MAX_BYTES: u64 = 8 << 20;
/// Chunks `put` writes at once (one write call; they are written side by side).
const PUT_CHUNKS_PER_WRITE: u64 = 2;
/// Largest piece `put` writes at once.
const WRITE_PIECE_MAX_BYTES: u64 = 128 << 20;

/// Runs a file command; `timeout` also bounds the wait for a lock.
pub async fn run(client: Client, command: Command, timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    match command {
        Command::Ls { long, recursive, json, path } => ls(&client, &path, long, recursive, json).await?,
        Command::Mkdir { parents, path } => {
            client.mkdir(&path, parents).await?;
        }
        Command::Create { replication, path } => {
            client.create(&path, replication).await?;
        }
        Command::Rm { recursive, path } => client.remove(&path, recursive).await?,
        Command::Mv { src, dst } => client.rename(&src, &dst).await?,
        Command::Put { replication, local, remote } => {
            let held = locking::exclusive(&client, &remote, timeout).await?;
            let result = put(&client, &local, &remote, replication, &held.lock).await;
            held.release().await?;
            result?
        }
        Command::Get { remote, local } => get(&client, &remote, &local).await?,
        Command::Cat { offset, length, remote } => cat(&client, &remote, offset, length).await?,
        Command::Write { offset, remote } => {
            let data = read_stdin().await?;
            locked_write(&client, &remote, timeout, Some(offset), &data).await?;
        }
        Command::Append { remote } => {
            let data = read_stdin().await?;
            locked_write(&client, &remote, timeout, None, &data).await?;
        }
        Command::Stat { json, path } => stat(&client, &path, json).await?,
        Command::Setrep { replication, path } => client.set_replication(&path, replication).await?,
        other => unreachable!("not a file command: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `data` at `offset` (None: appends) under the file's exclusive lock.
async fn locked_write(
    client: &Client,
    remote: &str,
    timeout: std::time::Duration,
    offset: Option<u64>,
    data: &[u8],
) -> anyhow::Result<()> {
    let held = locking::exclusive(client, remote, timeout).await?;
    let result = async {
        let mut file = client.open(remote).await?;
        file.set_fence(&held.lock);
        match offset {
            Some(at) => file.write_at(at, data).await,
            None => file.append(data).await.map(|_| ()),
        }
    }
    .await;
    held.release().await?;
    Ok(result?)
}

async fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    tokio::io::stdin().read_to_end(&mut data).await.context("reading stdin")?;
    Ok(data)
}

fn format_time(ms: u64) -> String {
    // UTC, to the second, without pulling in a date crate.
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

async fn ls(client: &Client, path: &str, long: bool, recursive: bool, json: bool) -> anyhow::Result<()> {
    let mut rows: Vec<(String, DirEntry)> = Vec::new();
    let top = client.stat(path).await?;
    let mut pending = Vec::new();
    if top.is_dir {
        pending.push(path.to_string());
    } else {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        rows.push((path.to_string(), DirEntry { name, stat: top }));
    }
    while let Some(dir) = pending.pop() {
        for e in client.list(&dir).await? {
            let full = join(&dir, &e.name);
            if recursive && e.stat.is_dir {
                pending.push(full.clone());
            }
            rows.push((full, e));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = std::io::stdout().lock();
    if json {
        let items: Vec<EntryReport> = rows.into_iter().map(|(full, e)| EntryReport::new(full, &e)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(());
    }
    for (full, e) in rows {
        let name = if recursive { full } else { e.name };
        let suffix = if e.stat.is_dir { "/" } else { "" };
        if long {
            let rep = if e.stat.is_dir { "-".to_string() } else { e.stat.replication.to_string() };
            writeln!(
                out,
                "{:<4} {:>12} {:>3} {} {name}{suffix}",
                kind(&e.stat),
                e.stat.size,
                rep,
                format_time(e.stat.mtime_ms)
            )?;
        } else {
            writeln!(out, "{name}{suffix}")?;
        }
    }
    Ok(())
}

fn progress(total: Option<u64>, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .expect("valid template")
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// Fills `buf` from `r` unless the input ends first; returns the bytes read.
async fn read_full(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copies a local file into Shoal. The data goes to a hidden temporary name
/// first and is renamed into place at the end, so a failed put leaves the
/// target as it was.
async fn put(
    client: &Client,
    local: &str,
    remote: &str,
    replication: Option<u32>,
    lock: &shoal_client::Lock,
) -> anyhow::Result<()> {
    let (mut input, total): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if local == "-" {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let f = tokio::fs::File::open(local).await.with_context(|| format!("cannot open {local}"))?;
        let len = f.metadata().await?.len();
        (Box::new(f), Some(len))
    };
    let target = shoal_core::NormalPath::parse(remote).map_err(shoal_core::FsError::from)?;
    let Some((parent, name)) = target.split_last() else { bail!("cannot put onto the root directory") };
    match client.stat(remote).await {
        Ok(s) if s.is_dir => bail!(shoal_core::FsError::IsADirectory { path: remote.to_string() }),
        Ok(_) => {}
        // A new reserved name is refused before any byte is sent (meta
        // would refuse the rename that ends the put; a put never means to
        // hide a file as a mount does).
        Err(_) => {
            if let Some(refusal) = shoal_core::path::reserved(&target, false) {
                bail!(refusal);
            }
        }
    }
    // Named so that it is never a reserved name itself.
    let tmp = parent.join(&format!(".shoal-put-{:08x}.{name}", rand::random::<u32>())).to_string();
    // The temporary file is this put's alone, so its writes need no fence;
    // the rename that puts it in place is fenced by the target's lock.
    let bar = progress(total, "put");
    let result: anyhow::Result<()> = async {
        match total {
            // Small: read whole, then a new file in one meta entry.
            Some(len) if (1..=WRITE_NEW_WHOLE_MAX_BYTES).contains(&len) => {
                let mut data = Vec::with_capacity(len as usize);
                input.read_to_end(&mut data).await.with_context(|| format!("reading {local}"))?;
                client.write_new(&tmp, data.into(), replication, None).await?;
                bar.inc(len);
            }
            _ => {
                // A known empty source makes an empty file: no chunk to prepare.
                let mut file = match total {
                    Some(0) => client.create(&tmp, replication).await?,
                    _ => client.create_for_writing(&tmp, replication).await?,
                };
                let chunk_size = file.cached_stat().chunk_size;
                let piece = (chunk_size * PUT_CHUNKS_PER_WRITE).clamp(1, WRITE_PIECE_MAX_BYTES) as usize;
                let mut buf = vec![0u8; piece];
                loop {
                    let n = read_full(&mut input, &mut buf).await.with_context(|| format!("reading {local}"))?;
                    if n == 0 {
                        break;
                    }
                    file.write(&buf[..n]).await?;
                    bar.inc(n as u64);
                }
            }
        }
        client.rename_fenced(&tmp, &target.to_string(), Some(lock)).await?;
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if result.is_err() {
        let _ = client.remove(&tmp, false).await;
    }
    result
}

/// Streams `[offset, offset + length)` of `remote` to `out`.
async fn copy_out(
    client: &Client,
    remote: &str,
    offset: u64,
    length: Option<u64>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    bar: Option<&ProgressBar>,
) -> anyhow::Result<()> {
    let mut file = client.open(remote).await?;
    let size = file.cached_stat().size;
    let end = length.map_or(size, |l| offset.saturating_add(l).min(size));
    if let Some(b) = bar {
        b.set_length(end.saturating_sub(offset));
    }
    let mut at = offset;
    while at < end {
        let want = (end - at).min(READ_PIECE_MAX_BYTES);
        let data = file.read_at(at, want).await?;
        if data.is_empty() {
            break;
        }
        out.write_all(&data).await?;
        at += data.len() as u64;
        if let Some(b) = bar {
            b.inc(data.len() as u64);
        }
    }
    out.flush().await?;
    Ok(())
}

async fn get(client: &Client, remote: &str, local: &str) -> anyhow::Result<()> {
    if local == "-" {
        return copy_out(client, remote, 0, None, &mut tokio::io::stdout(), None).await;
    }
    // Check the source before creating the destination.
    let stat = client.stat(remote).await?;
    if stat.is_dir {
        bail!(shoal_core::FsError::IsADirectory { path: remote.to_string() });
    }
    let mut out = tokio::fs::File::create(local).await.with_context(|| format!("cannot create {local}"))?;
    let bar = progress(Some(stat.size), "get");
    let result = copy_out(client, remote, 0, None, &mut out, Some(&bar)).await;
    bar.finish_and_clear();
    result?;
    out.sync_all().await?;
    Ok(())
}

async fn cat(client: &Client, remote: &str, offset: u64, length: Option<u64>) -> anyhow::Result<()> {
    copy_out(client, remote, offset, length, &mut tokio::io::stdout(), None).await
}

async fn stat(client: &Client, path: &str, as_json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let v = report::stat(client, path).await?;
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let (s, chunks) = client.chunks(path).await?;
    writeln!(out, "path:        {path}")?;
    writeln!(out, "type:        {}", kind(&s))?;
    writeln!(out, "inode:       {}", s.inode)?;
    writeln!(out, "size:        {} ({})", s.size, shoal_core::units::format_size(s.size))?;
    writeln!(out, "modified:    {} UTC", format_time(s.mtime_ms))?;
    if !s.is_dir {
        writeln!(out, "replication: {}", s.replication)?;
        writeln!(out, "chunk size:  {}", shoal_core::units::format_size(s.chunk_size))?;
        writeln!(out, "chunks:      {}", chunks.len())?;
        for c in &chunks {
            writeln!(out, "  #{:<4} id {:<8} v{:<4} on {}", c.index, c.id, c.version, c.replicas.join(", "))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
    }
}
