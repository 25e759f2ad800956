//! The terminal for a full-screen view (`shoal admin top`): the alternate
//! screen, keys read one at a time, the window's size, and putting it all
//! back.
//!
//! States: normal, then full screen from [`Screen::enter`] (the alternate
//! screen with the cursor hidden and, when stdin is a terminal, its line
//! discipline off: no echo, no line buffering, Ctrl-C a key like any other),
//! then normal again from [`restore`]. `restore` runs when the `Screen` drops
//! (so also on an error's early return and while a panic unwinds) and first
//! thing in the panic hook (so the panic message lands on the normal screen);
//! it is idempotent. Only this module changes the terminal's settings, and it
//! keeps the settings it found in one place ([`SAVED_TERMIOS`]).

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use tokio::sync::mpsc;

/// stdin's terminal settings from before [`Screen::enter`], while changed.
static SAVED_TERMIOS: Mutex<Option<libc::termios>> = Mutex::new(None);
/// Whether stdout shows the alternate screen.
static ON_ALTERNATE_SCREEN: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();

/// Switch to the alternate screen, hide the cursor, clear.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[2J";
/// Show the cursor, back to the normal screen (with what it showed before).
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// How often the key reader checks whether anyone still listens.
const KEY_POLL_MS: libc::c_int = 200;
/// Keys read but not yet handled, at most (more are dropped: nobody types that fast).
const KEYS_QUEUED_MAX: usize = 64;
/// The window size assumed when the terminal does not say.
const FALLBACK_SIZE: (usize, usize) = (80, 24);

/// The full-screen state; dropping it restores the terminal.
pub struct Screen {
    _private: (),
}

impl Screen {
    /// Enters the alternate screen and, when stdin is a terminal, reads keys
    /// without echo or line buffering.
    pub fn enter() -> io::Result<Screen> {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        if io::stdin().is_terminal() {
            raw_keys()?;
        }
        let screen = Screen { _private: () };
        ON_ALTERNATE_SCREEN.store(true, Ordering::SeqCst);
        let mut out = io::stdout().lock();
        out.write_all(ENTER.as_bytes())?;
        out.flush()?;
        Ok(screen)
    }

    /// Replaces what the screen shows with `lines`, each cleared to its end
    /// and the rest of the screen cleared below them. The caller keeps them
    /// within the window (see [`size`]), so nothing wraps or scrolls.
    pub fn draw(&mut self, lines: &[String]) -> io::Result<()> {
        let mut frame = String::from("\x1b[H");
        frame.push_str(&lines.join("\x1b[K\r\n"));
        frame.push_str("\x1b[K\x1b[J");
        let mut out = io::stdout().lock();
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the terminal back as [`Screen::enter`] found it; does nothing when
/// it is not changed.
pub fn restore() {
    if let Some(saved) = SAVED_TERMIOS.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // SAFETY: `saved` is a termios that tcgetattr filled for fd 0.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved) };
    }
    if ON_ALTERNATE_SCREEN.swap(false, Ordering::SeqCst) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
    }
}

/// Turns off echo, line buffering and the keys that send signals on stdin,
/// saving what was there.
fn raw_keys() -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut settings: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut settings) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut raw = settings;
    raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN);
    raw.c_iflag &= !(libc::IXON | libc::ICRNL);
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    let mut saved = SAVED_TERMIOS.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: `raw` is a valid termios derived from the current one.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
        return Err(io::Error::last_os_error());
    }
    saved.get_or_insert(settings);
    Ok(())
}

/// The keys typed on stdin, byte by byte, from a thread of their own. The
/// thread ends when the receiver is dropped (within [`KEY_POLL_MS`]) or stdin
/// closes.
pub fn keys() -> mpsc::Receiver<u8> {
    let (tx, rx) = mpsc::channel(KEYS_QUEUED_MAX);
    std::thread::Builder::new()
        .name("keys".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            while !tx.is_closed() {
                let mut fd = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                let ready = unsafe { libc::poll(&mut fd, 1, KEY_POLL_MS) };
                let interrupted = || io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
                match ready {
                    0 => continue,
                    r if r < 0 && interrupted() => continue,
                    r if r < 0 => return,
                    _ => {}
                }
                // SAFETY: reads at most buf.len() bytes into buf.
                let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
                match n {
                    n if n < 0 && interrupted() => continue,
                    n if n <= 0 => return,
                    _ => {}
                }
                for &b in &buf[..n as usize] {
                    let _ = tx.try_send(b);
                }
            }
        })
        .expect("spawn the key reader");
    rx
}

/// The window's (columns, rows), or 80×24 when stdout is no terminal.
pub fn size() -> (usize, usize) {
    // SAFETY: winsize is plain data; the ioctl fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 { (ws.ws_col.into(), ws.ws_row.into()) } else { FALLBACK_SIZE }
}
