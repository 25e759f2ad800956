//! `shoal admin top`: a live view of the cluster.
//!
//! Each refresh gathers an [`Overview`] (the reports `status`, `nodes` and
//! `fsck` print) and renders it as a frame: a list of lines, built by
//! [`render`] without any I/O. On a terminal, frames replace each other on the
//! alternate screen until `q`, Ctrl-C or SIGTERM, and the terminal is put
//! back however the command ends ([`crate::terminal`]). When stdout is not a
//! terminal, or with `--once`, one frame is printed and the command exits 0
//! whatever the frame says. An unreachable cluster is shown in the frame and
//! asked again at the next refresh.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use shoal_client::Client;
use shoal_core::units::format_size;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use super::overview::{self, Capacity, Overview, Verdict, by_address, health_words};
use crate::terminal::{self, Screen};

/// How long one refresh waits for the meta leader (each meta node's own
/// status is bounded by `shoal_client::report::NODE_STATUS_TIMEOUT`), so an unreachable
/// cluster shows within seconds rather than after the client's `--timeout`.
const REFRESH_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Cells of a chunk server's capacity bar.
const BAR_CELLS: u64 = 20;
/// Characters of the whole capacity cell: the bar in brackets, the
/// percentage (4) and "999.9 GiB / 999.9 GiB" (21), with a space between each.
const CAPACITY_CELL_WIDTH: usize = BAR_CELLS as usize + 2 + 1 + 4 + 1 + 21;
/// Used share of capacity from which a bar turns yellow, then red (percent).
const BAR_WARN_PERCENT: u64 = 80;
const BAR_FULL_PERCENT: u64 = 95;

pub async fn run(client: &Client, interval: Duration, once: bool) -> anyhow::Result<ExitCode> {
    let client = Client::connect_with_timeout(client.meta_addrs(), REFRESH_CALL_TIMEOUT).await?;
    let tty = std::io::stdout().is_terminal();
    if once || !tty {
        let o = overview::overview(&client).await;
        let style = Style { colour: tty, width: if tty { terminal::size().0 } else { usize::MAX } };
        let header = Header { now: SystemTime::now(), interval: None };
        let mut out = std::io::stdout().lock();
        for line in render(&o, &header, &style) {
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    live(&client, interval).await?;
    Ok(ExitCode::SUCCESS)
}

/// Redraws until the user quits.
async fn live(client: &Client, interval: Duration) -> anyhow::Result<()> {
    let mut screen = Screen::enter()?;
    let mut events = Events {
        keys: std::io::stdin().is_terminal().then(terminal::keys),
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
        resize: signal(SignalKind::window_change())?,
    };
    let header = |now| Header { now, interval: Some(interval) };
    let mut shown: Option<(Overview, SystemTime)> = None;
    loop {
        // Gather, redrawing the last frame if the window changes meanwhile.
        let gather = overview::overview(client);
        tokio::pin!(gather);
        let o = loop {
            tokio::select! {
                o = &mut gather => break o,
                e = events.next() => match e {
                    Event::Quit => return Ok(()),
                    Event::Redraw => if let Some((o, at)) = &shown { draw(&mut screen, o, &header(*at))? },
                },
            }
        };
        let at = SystemTime::now();
        draw(&mut screen, &o, &header(at))?;
        shown = Some((o, at));
        let pause = tokio::time::sleep(interval);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                e = events.next() => match e {
                    Event::Quit => return Ok(()),
                    Event::Redraw => if let Some((o, at)) = &shown { draw(&mut screen, o, &header(*at))? },
                },
            }
        }
    }
}

/// Renders a frame that fits the window: lines cut at its width, and at most
/// its height of them.
fn draw(screen: &mut Screen, o: &Overview, header: &Header) -> std::io::Result<()> {
    let (width, height) = terminal::size();
    let mut lines = render(o, header, &Style { colour: true, width });
    if lines.len() > height {
        let cut = lines.len() - (height - 1);
        lines.truncate(height - 1);
        lines.push(fit(&format!("… {cut} more lines (enlarge the window)"), width));
    }
    screen.draw(&lines)
}

enum Event {
    Quit,
    Redraw,
}

/// What can interrupt a wait: keys, signals, a new window size.
struct Events {
    /// None when stdin is not a terminal, or once it closed.
    keys: Option<mpsc::Receiver<u8>>,
    interrupt: Signal,
    terminate: Signal,
    resize: Signal,
}

impl Events {
    async fn next(&mut self) -> Event {
        loop {
            let key = tokio::select! {
                k = next_key(&mut self.keys) => k,
                _ = self.interrupt.recv() => return Event::Quit,
                _ = self.terminate.recv() => return Event::Quit,
                _ = self.resize.recv() => return Event::Redraw,
            };
            match key {
                // q, or Ctrl-C (a plain byte while the terminal sends no signals).
                Some(b'q' | b'Q' | 0x03) => return Event::Quit,
                Some(_) => {}
                None => self.keys = None,
            }
        }
    }
}

/// The next key; never, without a key reader.
async fn next_key(keys: &mut Option<mpsc::Receiver<u8>>) -> Option<u8> {
    match keys {
        Some(k) => k.recv().await,
        None => std::future::pending().await,
    }
}

/// How a frame is drawn.
pub struct Style {
    /// ANSI colours (only on a terminal).
    pub colour: bool,
    /// Lines longer than this many characters are cut.
    pub width: usize,
}

/// The frame's first line: when it was gathered and, live, how often.
pub struct Header {
    pub now: SystemTime,
    /// None for a single frame.
    pub interval: Option<Duration>,
}

#[derive(Clone, Copy)]
enum Colour {
    Green,
    Yellow,
    Red,
    Bold,
}

impl Style {
    fn paint(&self, text: &str, colour: Colour) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match colour {
            Colour::Green => "32",
            Colour::Yellow => "33",
            Colour::Red => "31",
            Colour::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// The frame for `o`, one string per line.
pub fn render(o: &Overview, header: &Header, style: &Style) -> Vec<String> {
    let mut lines = Vec::new();
    let mut top = format!("shoal top · {}", utc_clock(header.now));
    if let Some(every) = header.interval {
        let _ = write!(top, " · every {every:?} · q quits");
    }
    lines.push(style.paint(&top, Colour::Bold));
    lines.push(String::new());

    // The cluster at a glance.
    match &o.health {
        Ok(h) => {
            let colour = match Verdict::of(h) {
                Verdict::Healthy => Colour::Green,
                Verdict::Degraded => Colour::Yellow,
                Verdict::Unhealthy => Colour::Red,
            };
            let mut line = format!("Health    {}", style.paint(&health_words(h), colour));
            let _ = write!(line, " · repairs in flight {} · moves pending {}", h.repairs_in_flight, h.moves_pending);
            if h.repair_paused {
                let _ = write!(line, " · {}", style.paint("REPAIR PAUSED", Colour::Yellow));
            }
            lines.push(line);
        }
        Err(e) => lines.push(format!(
            "Health    {}",
            style.paint(&format!("unknown: {}", printable(&e.to_string())), Colour::Red)
        )),
    }
    match &o.servers {
        Ok(servers) => {
            let c = Capacity::of(servers);
            lines.push(format!(
                "Capacity  {} used · {} free · {} in all ({})",
                format_size(c.used_bytes),
                format_size(c.free_bytes()),
                format_size(c.capacity_bytes),
                percent(c.used_bytes, c.capacity_bytes).map_or("-".to_string(), |p| format!("{p}%"))
            ));
        }
        Err(_) => lines.push("Capacity  unknown".to_string()),
    }
    match &o.health {
        Ok(h) => lines.push(format!("Data      {} files · {} chunks", h.files, h.chunks)),
        Err(_) => lines.push("Data      unknown".to_string()),
    }
    lines.push(String::new());

    // The meta group.
    let leader = o.meta.leader_id.map_or("none".to_string(), |id| id.to_string());
    lines.push(style.paint(&format!("META NODES ({}, leader {leader})", o.meta.nodes.len()), Colour::Bold));
    lines.push(format!("{:<4} {:<22} {:<12} {:>6} {:>10} {:>8}", "ID", "ADDRESS", "ROLE", "TERM", "APPLIED", "LAG"));
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for n in &o.meta.nodes {
        let role = format!("{:<12}", n.role);
        let role = match n.role.as_str() {
            "leader" => style.paint(&role, Colour::Green),
            "follower" | "learner" => role,
            "unreachable" => style.paint(&role, Colour::Red),
            _ => style.paint(&role, Colour::Yellow),
        };
        let mut line = format!(
            "{:<4} {:<22} {role} {:>6} {:>10} {:>8}",
            or_dash(n.id),
            n.addr,
            or_dash(n.term),
            or_dash(n.last_applied),
            or_dash(o.meta.lag(n))
        );
        if let Some(e) = &n.error {
            let _ = write!(line, "  {}", printable(e));
        }
        lines.push(line);
    }
    lines.push(String::new());

    // The chunk servers.
    match &o.servers {
        Ok(servers) => {
            let count = |state: &str| servers.iter().filter(|s| s.state == state).count();
            lines.push(style.paint(
                &format!(
                    "CHUNK SERVERS ({} alive, {} dead, {} draining)",
                    count("alive"),
                    count("dead"),
                    count("draining")
                ),
                Colour::Bold,
            ));
            lines.push(format!(
                "{:<22} {:<9} {:<width$} {:>9} {:>10}",
                "ADDRESS",
                "STATE",
                "CAPACITY",
                "REPLICAS",
                "HEARD",
                width = CAPACITY_CELL_WIDTH
            ));
            for s in by_address(servers) {
                let state = format!("{:<9}", s.state);
                let state = match s.state.as_str() {
                    "alive" => style.paint(&state, Colour::Green),
                    "dead" => style.paint(&state, Colour::Red),
                    _ => style.paint(&state, Colour::Yellow),
                };
                lines.push(format!(
                    "{:<22} {state} {} {:>9} {:>10}",
                    s.addr,
                    capacity_cell(s.used_bytes, s.capacity_bytes, style),
                    s.chunk_count,
                    s.last_heartbeat_ms_ago.map_or("never".to_string(), ago)
                ));
            }
        }
        Err(e) => {
            lines.push(style.paint("CHUNK SERVERS", Colour::Bold));
            lines.push(style.paint(&format!("unknown: {}", printable(&e.to_string())), Colour::Red));
        }
    }
    lines.into_iter().map(|l| fit(&l, style.width)).collect()
}

/// A capacity bar, its percentage and the bytes, [`CAPACITY_CELL_WIDTH`]
/// characters wide (more only past 999.9 GiB).
fn capacity_cell(used: u64, capacity: u64, style: &Style) -> String {
    let Some(p) = percent(used, capacity) else {
        return format!("[{}] {:>4} {:>21}", " ".repeat(BAR_CELLS as usize), "-", "");
    };
    let filled = (u128::from(used.min(capacity)) * u128::from(BAR_CELLS) / u128::from(capacity)) as usize;
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_CELLS as usize - filled));
    let colour = match p {
        p if p >= BAR_FULL_PERCENT => Colour::Red,
        p if p >= BAR_WARN_PERCENT => Colour::Yellow,
        _ => Colour::Green,
    };
    let bytes = format!("{} / {}", format_size(used), format_size(capacity));
    format!("[{}] {:>4} {bytes:>21}", style.paint(&bar, colour), format!("{p}%"))
}

/// `part` as a whole percentage of `whole` (None when there is no whole).
fn percent(part: u64, whole: u64) -> Option<u64> {
    (whole > 0).then(|| (u128::from(part) * 100 / u128::from(whole)) as u64)
}

/// "0.3s ago", "12s ago", "4m ago".
fn ago(ms: u64) -> String {
    match ms {
        0..10_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        10_000..120_000 => format!("{}s ago", ms / 1000),
        _ => format!("{}m ago", ms / 60_000),
    }
}

/// "hh:mm:ss UTC" of `t`.
fn utc_clock(t: SystemTime) -> String {
    let s = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// `line` cut to `width` visible characters; ANSI colour sequences take no
/// room, and a cut line ends with a colour reset.
fn fit(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len().min(width.saturating_mul(4)));
    let mut visible = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // An escape sequence: ESC [ parameters, then one letter.
            out.push(c);
            for c in chars.by_ref() {
                out.push(c);
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if visible == width {
            if out.contains('\x1b') {
                out.push_str("\x1b[0m");
            }
            return out;
        }
        out.push(c);
        visible += 1;
    }
    out
}

/// `text` on one line with no control characters: an error from the network
/// may hold newlines or escape sequences, which would break the screen.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_client::report::{ChunkServerReport, FsckReport, MetaGroupReport, MetaNodeReport};

    fn sample() -> Overview {
        let meta = |id: u64, role: &str, applied: Option<u64>| MetaNodeReport {
            id: applied.map(|_| id),
            addr: format!("127.0.0.1:710{id}"),
            role: role.into(),
            term: applied.map(|_| 4),
            last_applied: applied,
            state_digest: None,
            error: applied.is_none().then(|| "connection refused".to_string()),
        };
        let server = |j: u64, state: &str, used: u64| ChunkServerReport {
            id: j,
            addr: format!("127.0.0.1:711{j}"),
            state: state.into(),
            used_bytes: used,
            capacity_bytes: 100 << 30,
            chunk_count: 7,
            listed_chunks: 7,
            draining: false,
            last_heartbeat_ms_ago: Some(300),
            read_bytes_total: 0,
            written_bytes_total: 0,
        };
        Overview {
            meta: MetaGroupReport {
                leader_id: Some(2),
                nodes: vec![meta(1, "follower", Some(95)), meta(2, "leader", Some(100)), meta(3, "unreachable", None)],
            },
            servers: Ok(vec![server(2, "alive", 99 << 30), server(1, "alive", 50 << 30), server(3, "dead", 0)]),
            health: Ok(FsckReport {
                healthy: false,
                files: 12,
                chunks: 34,
                under_replicated: 3,
                missing: 0,
                corrupt: 0,
                over_replicated: 0,
                repairs_in_flight: 2,
                moves_pending: 0,
                repair_paused: false,
                dead_servers: 1,
                draining_servers: 0,
                problems: Vec::new(),
                problems_left_out: 0,
            }),
        }
    }

    fn header() -> Header {
        Header { now: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 3723), interval: None }
    }

    #[test]
    fn a_frame_shows_health_capacity_and_every_node() {
        let lines = render(&sample(), &header(), &Style { colour: false, width: usize::MAX });
        let text = lines.join("\n");
        assert!(lines[0].starts_with("shoal top · 01:02:03 UTC"), "{text}");
        assert!(text.contains("Health    degraded: 3 under-replicated · repairs in flight 2"), "{text}");
        // Capacity counts the two alive servers only.
        assert!(text.contains("Capacity  149.0 GiB used · 51.0 GiB free · 200.0 GiB in all (74%)"), "{text}");
        assert!(text.contains("Data      12 files · 34 chunks"), "{text}");
        assert!(text.contains("META NODES (3, leader 2)"), "{text}");
        let row = |addr: &str| lines.iter().find(|l| l.contains(addr)).unwrap().clone();
        assert!(row("127.0.0.1:7101").split_whitespace().eq(["1", "127.0.0.1:7101", "follower", "4", "95", "5"]));
        assert!(row("127.0.0.1:7102").contains("leader"));
        assert!(row("127.0.0.1:7103").contains("unreachable") && row("127.0.0.1:7103").contains("connection refused"));
        assert!(text.contains("CHUNK SERVERS (2 alive, 1 dead, 0 draining)"), "{text}");
        assert!(row("127.0.0.1:7111").contains("[##########----------]  50%"), "{text}");
        assert!(row("127.0.0.1:7112").contains("[###################-]  99%"), "{text}");
        assert!(row("127.0.0.1:7113").contains("dead") && row("127.0.0.1:7113").contains("0.3s ago"));
        assert!(!text.contains('\x1b'), "no colour without a terminal");
        // Columns line up: a header is as long as the rows under it.
        let len = |prefix: &str| lines.iter().find(|l| l.starts_with(prefix)).unwrap().chars().count();
        assert_eq!(len("ID "), len("1    127.0.0.1:7101"), "{text}");
        assert_eq!(len("ADDRESS"), len("127.0.0.1:7111"), "{text}");
        let servers: Vec<&String> = lines.iter().filter(|l| l.starts_with("127.0.0.1:711")).collect();
        assert!(servers.windows(2).all(|w| w[0] < w[1]), "servers by address: {servers:?}");
    }

    #[test]
    fn colours_say_the_verdict_and_the_roles() {
        let lines = render(&sample(), &header(), &Style { colour: true, width: usize::MAX });
        let text = lines.join("\n");
        assert!(text.contains("\x1b[33mdegraded: 3 under-replicated\x1b[0m"), "{text}");
        assert!(text.contains("\x1b[32mleader"), "{text}");
        assert!(text.contains("\x1b[31munreachable"), "{text}");
        assert!(text.contains("\x1b[31m###################-\x1b[0m"), "a nearly full server's bar is red");
    }

    #[test]
    fn an_unreachable_cluster_is_shown_not_fatal() {
        let mut o = sample();
        o.health = Err("meta unreachable: connection refused".into());
        o.servers = Err("meta unreachable: connection refused".into());
        let text = render(&o, &header(), &Style { colour: false, width: usize::MAX }).join("\n");
        assert!(text.contains("Health    unknown: meta unreachable: connection refused"), "{text}");
        assert!(text.contains("Capacity  unknown"), "{text}");
        assert!(text.contains("CHUNK SERVERS\nunknown: meta unreachable"), "{text}");
    }

    #[test]
    fn lines_fit_the_width_and_colour_takes_no_room() {
        assert_eq!(fit("abcdef", 4), "abcd");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(fit("\x1b[32mabcdef\x1b[0m", 3), "\x1b[32mabc\x1b[0m");
        assert_eq!(fit("ab\x1b[31mcd\x1b[0m", 4), "ab\x1b[31mcd\x1b[0m");
        assert_eq!(fit("·ab", 2), "·a");
        let lines = render(&sample(), &header(), &Style { colour: true, width: 30 });
        for l in &lines {
            assert!(visible_len(l) <= 30, "{l:?}");
        }
    }

    /// Characters a line shows, escape sequences left out.
    fn visible_len(line: &str) -> usize {
        let mut n = 0;
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, c) if c.is_ascii_alphabetic() => in_escape = false,
                (true, _) => {}
                (false, _) => n += 1,
            }
        }
        n
    }

    #[test]
    fn bars_percentages_and_ages() {
        let plain = Style { colour: false, width: usize::MAX };
        assert!(capacity_cell(0, 0, &plain).starts_with("[                    ]    -"));
        assert!(capacity_cell(100, 100, &plain).starts_with("[####################] 100%"));
        assert!(capacity_cell(200, 100, &plain).starts_with("[####################] 200%"));
        for (used, cap) in [(0, 0), (1, 1), (500 << 30, 999 << 30)] {
            assert_eq!(capacity_cell(used, cap, &plain).chars().count(), CAPACITY_CELL_WIDTH);
        }
        assert_eq!(percent(1, 3), Some(33));
        assert_eq!(percent(u64::MAX, u64::MAX), Some(100));
        assert_eq!((ago(300), ago(45_000), ago(600_000)), ("0.3s ago".into(), "45s ago".into(), "10m ago".into()));
    }

    #[test]
    fn error_text_is_kept_to_one_printable_line() {
        assert_eq!(printable("a\nb\x1b[2Jc\t"), "a b [2Jc ");
    }
}
