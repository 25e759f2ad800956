//! `shoal shell`: the prototype's interactive menu over the client library.
//!
//! Commands: create, delete, open, close, read, write, seek, list, help, exit.
//! `open` keeps a file and a position; `read`, `write` and `seek` use them.
//! As in the prototype, `open` takes the file's exclusive lock (waiting in
//! line if another client holds it) and `close` releases it; writes carry its
//! fencing token. A failed command prints `error: ...` and the shell carries on.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use shoal_client::{Client, DEFAULT_SESSION_TTL, File, Lock, SeekFrom, Session};
use tokio::io::{AsyncBufReadExt, BufReader};

const HELP: &str = "\
commands:
  create PATH            create an empty file
  delete PATH            delete a file or an empty directory
  open PATH              open a file and take its lock; the position starts at 0
  close                  close the current file and release its lock
  read [N]               read N bytes (default: to the end) at the position
  write TEXT...          write TEXT at the position (modify in place or extend)
  seek N [start|current|end]   move the position (default: from the start)
  list [PATH]            list a directory (default /)
  help                   this text
  exit                   leave";

struct Shell {
    client: Client,
    /// How long `open` waits for a lock.
    lock_timeout: std::time::Duration,
    /// Opened at the first `open`.
    locks: Option<Session>,
    open: Option<(File, Lock)>,
}

pub async fn run(client: Client, lock_timeout: std::time::Duration) -> anyhow::Result<ExitCode> {
    let interactive = std::io::stdin().is_terminal();
    let mut session = Shell { client, lock_timeout, locks: None, open: None };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    if interactive {
        println!("Shoal shell. Type 'help' for the commands.");
    }
    loop {
        if interactive {
            let name = session.open.as_ref().map_or(String::new(), |(f, _)| format!(" {}@{}", f.path(), f.position()));
            print!("shoal{name}> ");
            std::io::stdout().flush()?;
        }
        let Some(line) = lines.next_line().await.context("reading a command")? else { break };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if matches!(cmd, "exit" | "quit") {
            break;
        }
        if let Err(e) = session.exec(cmd, rest.trim()).await {
            println!("error: {e:#}");
        }
    }
    session.close_file().await.ok();
    if let Some(s) = session.locks.take() {
        s.close().await.ok();
    }
    Ok(ExitCode::SUCCESS)
}

impl Shell {
    fn current(&mut self) -> anyhow::Result<&mut File> {
        self.open.as_mut().map(|(f, _)| f).context("no file is open (use: open PATH)")
    }

    /// Opens `path` under its exclusive lock.
    async fn open_file(&mut self, path: &str) -> anyhow::Result<()> {
        self.close_file().await?;
        let mut file = self.client.open(path).await?;
        if self.locks.as_ref().is_none_or(|s| !s.is_alive()) {
            self.locks = Some(self.client.open_session(DEFAULT_SESSION_TTL).await?);
        }
        let locks = self.locks.as_ref().expect("opened above");
        let lock = match locks.try_lock(file.path(), false).await? {
            Some(l) => l,
            None => {
                println!("waiting for the lock on {path} ...");
                locks.lock(file.path(), false, Some(self.lock_timeout)).await?
            }
        };
        file.set_fence(&lock);
        println!("opened {path} ({} bytes), locked", file.cached_stat().size);
        self.open = Some((file, lock));
        Ok(())
    }

    async fn close_file(&mut self) -> anyhow::Result<Option<String>> {
        let Some((file, lock)) = self.open.take() else { return Ok(None) };
        if let Some(s) = &self.locks {
            s.unlock(&lock).await?;
        }
        Ok(Some(file.path().to_string()))
    }

    async fn exec(&mut self, cmd: &str, arg: &str) -> anyhow::Result<()> {
        let need_path = || if arg.is_empty() { bail!("{cmd} needs a PATH") } else { Ok(arg) };
        match cmd {
            "help" => println!("{HELP}"),
            "create" => {
                self.client.create(need_path()?, None).await?;
                println!("created {arg}");
            }
            "delete" => {
                self.client.remove(need_path()?, false).await?;
                println!("deleted {arg}");
            }
            "open" => self.open_file(need_path()?).await?,
            "close" => match self.close_file().await? {
                Some(path) => println!("closed {path}"),
                None => bail!("no file is open"),
            },
            "read" => {
                let f = self.current()?;
                let n = if arg.is_empty() {
                    f.len().await?.saturating_sub(f.position())
                } else {
                    arg.parse().with_context(|| format!("{arg:?} is not a byte count"))?
                };
                let mut buf = vec![0u8; n as usize];
                let got = f.read(&mut buf).await?;
                println!("{}", String::from_utf8_lossy(&buf[..got]));
            }
            "write" => {
                let f = self.current()?;
                let n = f.write(arg.as_bytes()).await?;
                println!("wrote {n} bytes; position {}", f.position());
            }
            "seek" => {
                let mut parts = arg.split_whitespace();
                let n: i64 = parts
                    .next()
                    .context("seek needs an offset")?
                    .parse()
                    .context("the offset must be a whole number")?;
                let to = match parts.next().unwrap_or("start") {
                    "start" | "set" => {
                        SeekFrom::Start(u64::try_from(n).context("a position from the start cannot be negative")?)
                    }
                    "current" | "cur" => SeekFrom::Current(n),
                    "end" => SeekFrom::End(n),
                    other => bail!("unknown seek origin {other:?}: use start, current or end"),
                };
                let pos = self.current()?.seek(to).await?;
                println!("position {pos}");
            }
            "list" | "ls" => {
                let path = if arg.is_empty() { "/" } else { arg };
                for e in self.client.list(path).await? {
                    let kind = if e.stat.is_dir { "dir " } else { "file" };
                    println!("{kind} {:>12} {}{}", e.stat.size, e.name, if e.stat.is_dir { "/" } else { "" });
                }
            }
            other => bail!("unknown command {other:?}; type 'help'"),
        }
        Ok(())
    }
}
