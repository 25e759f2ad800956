//! t98: flock(2) through `shoal mount`, and fcntl(2) byte ranges with
//! `--cluster-fcntl-locks`, are the cluster's locks: real programs (python3's
//! `fcntl` module, sqlite3) on two mounts of one cluster, through the kernel.
//! Conflicts and FIFO hand-over across mounts (two waiters on different
//! mounts are granted in the order they asked), F_GETLK, byte ranges held,
//! split and converted, POSIX release on close, a waiter interrupted by a
//! signal, a dead mount's locks passing on after its session TTL, and
//! fencing of flock (without `--cluster-fcntl-locks`): a paused mount whose
//! lock passed on cannot change a byte.
//!
//! Each program is a python3 process driven line by line over its stdin
//! ([`Prog`]); mounts are [`Mount`]s. Both are killed when they drop, also
//! on a panic, and the mount directories are lazily unmounted.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::common::mount::{Mount, can_mount};
use crate::common::*;
use crate::t97_mount::{have, must_sh};

/// The driver: one command a line, one answer a line (`ok [value]`,
/// `err ERRNO`, or `intr` when a signal handler interrupted the call).
const DRIVER: &str = r#"
import fcntl, os, signal, struct, sys

class Interrupted(Exception):
    pass

def on_usr1(signum, frame):
    raise Interrupted()

signal.signal(signal.SIGUSR1, on_usr1)
MODES = {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "un": fcntl.LOCK_UN}
TYPES = {fcntl.F_RDLCK: "rd", fcntl.F_WRLCK: "wr", fcntl.F_UNLCK: "un"}
fds = {}
for line in sys.stdin:
    words = line.split()
    cmd, args = words[0], words[1:]
    try:
        out = ""
        if cmd == "open":
            fds[args[0]] = os.open(args[1], os.O_RDWR)
        elif cmd == "close":
            os.close(fds.pop(args[0]))
        elif cmd == "flock":
            fcntl.flock(fds[args[0]], MODES[args[1]] | (fcntl.LOCK_NB if args[2:] == ["nb"] else 0))
        elif cmd == "lockf":
            fcntl.lockf(fds[args[0]], MODES[args[1]] | (fcntl.LOCK_NB if args[2:] == ["nb"] else 0))
        elif cmd == "lockr":
            # lockr FD MODE START LEN [nb]: a byte range (LEN 0: to the end).
            nb = fcntl.LOCK_NB if args[4:] == ["nb"] else 0
            fcntl.lockf(fds[args[0]], MODES[args[1]] | nb, int(args[3]), int(args[2]))
        elif cmd == "getlk":
            # getlk FD TYPE [START LEN]: the first lock in the way, as "TYPE START LEN".
            typ = fcntl.F_RDLCK if args[1] == "rd" else fcntl.F_WRLCK
            start, length = (int(args[2]), int(args[3])) if args[2:] else (10, 5)
            query = struct.pack("hhqqixxxx", typ, os.SEEK_SET, start, length, 0)
            got = struct.unpack("hhqqixxxx", fcntl.fcntl(fds[args[0]], fcntl.F_GETLK, query))
            out = " %s %d %d" % (TYPES[got[0]], got[2], got[3])
        elif cmd == "write":
            os.pwrite(fds[args[0]], args[2].encode(), int(args[1]))
        elif cmd == "fsync":
            os.fsync(fds[args[0]])
        elif cmd == "read":
            out = " " + os.pread(fds[args[0]], 1 << 16, 0).decode()
        else:
            raise ValueError(cmd)
        print("ok" + out, flush=True)
    except OSError as e:
        print("err %d" % e.errno, flush=True)
    except Interrupted:
        print("intr", flush=True)
"#;

/// A python3 driver process. Dropped, it is killed (without waiting: a
/// process inside a call to a stopped mount cannot die before the mount does).
struct Prog {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    name: &'static str,
}

impl Prog {
    fn start(name: &'static str) -> Prog {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg("-c")
            .arg(DRIVER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, answers) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Prog { child, stdin, answers, name }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a command without waiting for its answer.
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap_or_else(|e| panic!("{}: {line}: {e}", self.name));
    }

    /// The next answer, or `None` if none came within `wait`.
    fn answer_within(&mut self, wait: Duration) -> Option<String> {
        match self.answers.recv_timeout(wait) {
            Ok(a) => Some(a),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("{}: the driver exited", self.name),
        }
    }

    /// The next answer; panics if none comes within [`PATIENCE`] (a hang).
    fn answer(&mut self, what: &str) -> String {
        self.answer_within(PATIENCE).unwrap_or_else(|| panic!("{}: no answer to {what} in time", self.name))
    }

    /// Runs `line` and answers its answer.
    fn run(&mut self, line: &str) -> String {
        self.send(line);
        self.answer(line)
    }

    /// Runs the try-lock `line` until it answers `ok`: a close releases a
    /// flock lock asynchronously (the kernel sends the release after
    /// close(2) returns), so the lock is free soon after, not at once.
    fn must_eventually(&mut self, line: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.run(line) {
                a if a.starts_with("ok") => return,
                a if a == EAGAIN && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                a => panic!("{}: {line}: {a}", self.name),
            }
        }
    }

    /// Runs `line` and panics unless it answers `ok...`.
    fn must(&mut self, line: &str) -> String {
        let a = self.run(line);
        assert!(a.starts_with("ok"), "{}: {line}: {a}", self.name);
        a
    }
}

impl Drop for Prog {
    fn drop(&mut self) {
        self.child.kill().ok();
        // Reaped when it is gone; a process stuck in a dead mount's call is left.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const EAGAIN: &str = "err 11";
const EDEADLK: &str = "err 35";

/// A cluster, mount `a` (with `a_flags`) and mount `b` (with `b_flags`) of
/// it, and the file `/f` holding `content`; `None` where mounts cannot be
/// made (skipped).
fn two_mounts(test: &str, a_flags: &[&str], b_flags: &[&str], content: &[u8]) -> Option<(Cluster, Mount, Mount)> {
    if !can_mount(test) {
        return None;
    }
    let c = Cluster::start(Options::default());
    let a = Mount::start(&c, "a", a_flags);
    let b = Mount::start(&c, "b", b_flags);
    std::fs::write(a.path("f"), content).unwrap();
    Some((c, a, b))
}

/// A driver named `name` with `/f` of mount `m` open as `x`.
fn with_f_open(name: &'static str, m: &Mount) -> Prog {
    let mut p = Prog::start(name);
    p.must(&format!("open x {}", m.path("f").display()));
    p
}

/// Waits until at least `n` requests queue for the cluster lock of the
/// file at `path` (a path on a mount), as meta reports it.
fn queued_at_least(c: &Cluster, path: &std::path::Path, n: usize) {
    queued_in_at_least(c, path, "queue", n);
}

/// Waits until at least `n` entries are in the report's list `list`
/// (`queue`: whole-file waiters; `ranges_queued`: byte-range waiters) for
/// the file at `path`, as meta reports it.
fn queued_in_at_least(c: &Cluster, path: &std::path::Path, list: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (v, err) = lock_report(c, path);
        let queued = v.as_ref().and_then(|v| v[list].as_array()).map_or(0, |q| q.len());
        if queued >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} waiters never queued for {}: {err}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `shoal admin locks --json` of the file at `path` (a path on a mount):
/// the report, if it parsed, and the command's stderr.
fn lock_report(c: &Cluster, path: &std::path::Path) -> (Option<serde_json::Value>, String) {
    use std::os::unix::fs::MetadataExt;
    let name = shoal_core::path::inode_lock_name(std::fs::metadata(path).unwrap().ino());
    let out = c.shoal(&["admin", "locks", "--json", &name], None);
    (serde_json::from_slice(&out.stdout).ok(), stderr(&out))
}

/// A blocking request (sent already) is still waiting: no answer for a while.
fn still_waiting(p: &mut Prog, what: &str) {
    if let Some(a) = p.answer_within(Duration::from_millis(1500)) {
        panic!("{}: {what} answered {a} while another held the lock", p.name);
    }
}

#[test]
fn t98_flock_across_two_mounts_conflicts_and_hands_over_in_order() {
    let test = "t98_flock_across_two_mounts_conflicts_and_hands_over_in_order";
    let Some((c, a, b)) = two_mounts(test, &[], &[], b"lockme") else { return };
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);
    let mut pc = Prog::start("pc");

    // Phase 1: exclusive on A keeps B out (non-blocking: EWOULDBLOCK), shared too.
    pa.must("flock x ex");
    assert_eq!(pb.run("flock x ex nb"), EAGAIN, "exclusive through A, so B would block");
    assert_eq!(pb.run("flock x sh nb"), EAGAIN, "no shared beside an exclusive");
    // Shared with shared: both hold.
    pa.must("flock x un");
    pa.must("flock x sh");
    pb.must("flock x sh nb");
    pc.must(&format!("open x {}", a.path("f").display()));
    assert_eq!(pc.run("flock x ex nb"), EAGAIN, "two shared holders keep an exclusive out, on A too");
    pb.must("flock x un");
    pa.must("flock x un");

    // fcntl locks stay the kernel's by default (byte ranges, local to a
    // mount): one through B is not kept out by one through A, and they do
    // not meet flock locks.
    pa.must("lockf x ex");
    pb.must("lockf x ex nb");
    pb.must("flock x ex nb");
    pb.must("flock x un");
    pa.must("lockf x un");
    pb.must("lockf x un");

    // Phase 2: FIFO across mounts: B's blocking request waits while A
    // holds, then D's (another program on A's mount) queues behind it. When
    // A's program closes the file B is granted, not D, which waits until B
    // lets go.
    pa.must("flock x ex");
    pb.send("flock x ex");
    still_waiting(&mut pb, "a blocking flock");
    // B's request is queued on meta before D asks, whatever the load.
    queued_at_least(&c, &a.path("f"), 1);
    let mut pd = with_f_open("pd", &a);
    pd.send("flock x ex");
    still_waiting(&mut pd, "a second blocking flock");
    pa.must("close x");
    assert_eq!(pb.answer("a blocking flock"), "ok", "the first waiter is granted once A closed");
    still_waiting(&mut pd, "the second waiter, while the first holds");
    pb.must("flock x un");
    assert_eq!(pd.answer("the second waiter"), "ok", "granted once the first let go");
    assert_eq!(pb.run("flock x ex nb"), EAGAIN, "D holds it now");
    pd.must("close x");
    pb.must_eventually("flock x ex nb");
    assert_eq!(pc.run("flock x ex nb"), EAGAIN, "B holds it now");

    // Phase 3: a rename does not change which lock a file has.
    std::fs::rename(a.path("f"), a.path("g")).unwrap();
    pc.must(&format!("open y {}", a.path("g").display()));
    assert_eq!(pc.run("flock y ex nb"), EAGAIN, "the same file under its new name");
    pb.must("close x");
    pc.must_eventually("flock y ex nb");

    // Phase 4: a waiter interrupted by a signal ends its wait with the
    // handler's exception and leaves the queue.
    pb.must(&format!("open z {}", b.path("g").display()));
    pb.send("flock z ex");
    still_waiting(&mut pb, "a blocking flock");
    signal(pb.pid(), libc::SIGUSR1).unwrap();
    assert_eq!(pb.answer("an interrupted flock"), "intr");
    pc.must("close y");
    // Had B's request stayed queued, FIFO would refuse this try-lock (for
    // good, not only until the release arrives).
    pa.must(&format!("open w {}", a.path("g").display()));
    pa.must_eventually("flock w ex nb");
    assert_eq!(pb.run("flock z sh nb"), EAGAIN, "A holds it");
}

#[test]
fn t98_fcntl_locks_across_mounts_getlk_and_release_on_any_close() {
    let test = "t98_fcntl_locks_across_mounts_getlk_and_release_on_any_close";
    let Some((_c, a, b)) = two_mounts(test, &["--cluster-fcntl-locks"], &["--cluster-fcntl-locks"], b"records") else {
        return;
    };
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);

    // Phase 1: F_SETLK conflicts across mounts; F_GETLK reports the holder, whole-file.
    assert_eq!(pb.run("getlk x wr"), "ok un 10 5", "nothing held yet");
    pa.must("lockf x ex");
    assert_eq!(pb.run("lockf x ex nb"), EAGAIN);
    assert_eq!(pb.run("lockf x sh nb"), EAGAIN);
    assert_eq!(pb.run("getlk x rd"), "ok wr 0 0", "A's write lock, over the whole file (len 0)");
    assert_eq!(pa.run("getlk x wr"), "ok un 10 5", "a process's own lock is no conflict");
    // A read lock on A lets B read-lock, but F_GETLK for a write lock reports it.
    pa.must("lockf x sh");
    pb.must("lockf x sh nb");
    assert_eq!(pb.run("getlk x wr"), "ok rd 0 0");
    pb.must("lockf x un");

    // Phase 2: POSIX: closing any descriptor of the file drops the process's
    // lock, even one it did not lock through.
    pa.must("lockf x ex");
    assert_eq!(pb.run("lockf x ex nb"), EAGAIN);
    pa.must(&format!("open other {}", a.path("f").display()));
    pa.must("close other");
    pb.must("lockf x ex nb");
    assert_eq!(pa.run("getlk x rd"), "ok wr 0 0", "B holds it now");
    assert_eq!(pa.run("lockf x sh nb"), EAGAIN);

    // Phase 3: a blocking F_SETLKW on A waits for B's unlock.
    pa.send("lockf x ex");
    still_waiting(&mut pa, "a blocking lockf");
    pb.must("lockf x un");
    assert_eq!(pa.answer("a blocking lockf"), "ok");
    assert_eq!(pb.run("getlk x rd"), "ok wr 0 0");
}

/// fcntl byte ranges with `--cluster-fcntl-locks`: disjoint ranges are held
/// on two mounts at once, overlapping ones conflict, F_GETLK names the
/// range in the way, an unlock of part of a range and a conversion of part
/// of one change only those bytes, a blocked F_SETLKW waits on the server
/// for exactly the bytes it needs, and a close lets go of every range.
#[test]
fn t98_fcntl_byte_ranges_across_mounts() {
    let test = "t98_fcntl_byte_ranges_across_mounts";
    let Some((c, a, b)) = two_mounts(test, &["--cluster-fcntl-locks"], &["--cluster-fcntl-locks"], b"records") else {
        return;
    };
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);

    // Phase 1: bytes 0..100 on A and 100..200 on B are held at once.
    pa.must("lockr x ex 0 100 nb");
    pb.must("lockr x ex 100 100 nb");
    assert_eq!(pb.run("lockr x sh 50 100 nb"), EAGAIN, "50..100 are A's");
    assert_eq!(pa.run("lockr x sh 199 1 nb"), EAGAIN, "199 is B's");
    assert_eq!(pb.run("getlk x wr 60 10"), "ok wr 0 100", "A's range, as A took it");
    assert_eq!(pa.run("getlk x rd 150 100"), "ok wr 100 100");
    assert_eq!(pa.run("getlk x wr 200 0"), "ok un 200 0", "nothing past B's range");
    pa.must("lockr x sh 300 0 nb");
    assert_eq!(pb.run("getlk x rd 1000 1"), "ok un 1000 1", "A's read lock to the end shares");
    assert_eq!(pb.run("getlk x wr 1000 1"), "ok rd 300 0", "... and is in a writer's way");

    // Phase 2: A unlocks 0..50: B takes them; 50..100 stay A's.
    pa.must("lockr x un 0 50");
    pb.must("lockr x sh 0 50 nb");
    assert_eq!(pb.run("lockr x sh 40 20 nb"), EAGAIN, "50..60 still A's, exclusive");

    // Phase 3: A turns 50..100 shared (no moment unlocked): B may share them.
    pa.must("lockr x sh 50 50");
    pb.must("lockr x sh 40 20 nb");
    assert_eq!(pb.run("lockr x ex 40 20 nb"), EAGAIN, "A shares 50..60");

    // Phase 4: B waits for 0..200 exclusive, in A's way at 50..100 only.
    pb.send("lockr x ex 0 200");
    still_waiting(&mut pb, "a blocking byte-range lock");
    // `shoal admin locks` shows the bytes held and waited for.
    let (report, err) = lock_report(&c, &a.path("f"));
    let report = report.unwrap_or_else(|| panic!("admin locks: {err}"));
    let bytes = |rows: &serde_json::Value| -> Vec<(String, u64, u64)> {
        let row = |r: &serde_json::Value| {
            let b = &r["bytes"];
            (r["mode"].as_str().unwrap().to_string(), b[0].as_u64().unwrap(), b[1].as_u64().unwrap())
        };
        rows.as_array().unwrap().iter().map(row).collect()
    };
    assert_eq!(bytes(&report["ranges_queued"]), vec![("exclusive".to_string(), 0, 199)], "{report}");
    let held = bytes(&report["ranges_held"]);
    assert!(held.contains(&("shared".to_string(), 50, 99)), "A's shared bytes: {report}");
    assert!(held.contains(&("shared".to_string(), 0, 59)), "B's merged shared bytes: {report}");
    pa.must("lockr x un 300 0");
    still_waiting(&mut pb, "a blocking byte-range lock (after an unlock of other bytes)");
    pa.must("lockr x un 0 0");
    assert_eq!(pb.answer("a blocking byte-range lock"), "ok");
    assert_eq!(pa.run("getlk x rd 0 1"), "ok wr 0 200", "B's pieces merged into one range");

    // Phase 5: a close of any descriptor lets go of every range of B's.
    pb.must(&format!("open other {}", b.path("f").display()));
    pb.must("close other");
    pa.must("lockr x ex 0 0 nb");
    pa.must("lockr x un 0 0");

    // Phase 6: in this mode a flock is a whole-file range of its open file
    // description; two shared holders that both ask for exclusive do not
    // wait for each other forever (the first lets go of its shared lock to
    // wait, as flock converts).
    pa.must(&format!("open fa {}", a.path("f").display()));
    pb.must(&format!("open fb {}", b.path("f").display()));
    pa.must("flock fa sh");
    pb.must("flock fb sh nb");
    pa.send("flock fa ex");
    still_waiting(&mut pa, "a flock conversion");
    pb.must("flock fb ex");
    // B's flock (its open file description's) is in the way of B's fcntl
    // locks (its process's): another owner.
    assert_eq!(pb.run("getlk x rd 0 1").split(' ').nth(1), Some("wr"));
    pb.must("flock fb un");
    assert_eq!(pa.answer("a flock conversion"), "ok");
    pa.must("flock fa un");

    // Phase 7: deadlocks. A holds byte 0 and waits for byte 1, which B
    // holds; B asking for byte 0 would wait forever: EDEADLK, and B still
    // holds byte 1 (nothing changed). A chain through a third owner (C, a
    // process on mount A) is seen too. A try-lock is never a deadlock.
    pa.must("lockr x ex 0 1 nb");
    pb.must("lockr x ex 1 1 nb");
    pa.send("lockr x ex 1 1");
    still_waiting(&mut pa, "a wait on B's byte");
    // Whatever the load: A's wait is in meta's queue before B asks.
    queued_in_at_least(&c, &a.path("f"), "ranges_queued", 1);
    assert_eq!(pb.run("lockr x ex 0 1 nb"), EAGAIN);
    assert_eq!(pb.run("lockr x ex 0 1"), EDEADLK, "B waiting on A, which waits on B");
    assert_eq!(pb.run("lockr x sh 0 2"), EDEADLK, "any bytes of A's");
    assert_eq!(getlk_by_another(&a, "wr 1 1"), "ok wr 1 1", "B still holds byte 1");
    let mut pc = with_f_open("pc", &a);
    pc.must("lockr x ex 2 1 nb");
    pb.send("lockr x ex 2 1");
    still_waiting(&mut pb, "B's wait on C's byte");
    queued_in_at_least(&c, &a.path("f"), "ranges_queued", 2);
    assert_eq!(pc.run("lockr x ex 1 1"), EDEADLK, "C -> B -> C");
    assert_eq!(pc.run("lockr x ex 0 1"), EDEADLK, "C -> A -> B -> C");
    pc.must("lockr x un 2 1");
    assert_eq!(pb.answer("B's wait on C's byte"), "ok");
    pb.must("lockr x un 1 2");
    assert_eq!(pa.answer("a wait on B's byte"), "ok");
}

/// F_GETLK of `range` ("TYPE START LEN") on `/f`, asked by a process of its
/// own on mount `m` (which holds no lock).
fn getlk_by_another(m: &Mount, range: &str) -> String {
    with_f_open("getlk", m).run(&format!("getlk x {range}"))
}

/// SQLite in rollback-journal mode on two mounts at once, with
/// `--cluster-fcntl-locks`: its byte-range locks (SHARED, RESERVED, PENDING
/// and EXCLUSIVE are bytes of the database file) hold across the mounts, and
/// a grant drops the kernel's cached pages, so each writer reads what the
/// other committed: every row of both lands, and the database checks whole.
#[test]
fn t98_sqlite_on_two_mounts_with_cluster_fcntl_locks() {
    let test = "t98_sqlite_on_two_mounts_with_cluster_fcntl_locks";
    if !have(test, "sqlite3", "apt-get install sqlite3") {
        return;
    }
    let flags = ["--cluster-fcntl-locks"];
    let Some((_c, a, b)) = two_mounts(test, &flags, &flags, b"") else { return };
    must_sh(&a.dir, "sqlite3 t.db 'PRAGMA journal_mode=delete; CREATE TABLE t(w, i);' >/dev/null");
    let writer = |m: &Mount, w: u32| {
        let db = m.path("t.db");
        format!(
            "for i in $(seq 1 30); do echo \"INSERT INTO t VALUES({w}, $i);\"; done \
             | sqlite3 -bail -cmd '.timeout 30000' {}",
            db.display()
        )
    };
    must_sh(&a.dir, &format!("({}) & one=$!; ({}) & two=$!; wait $one && wait $two", writer(&a, 1), writer(&b, 2)));
    for m in [&a, &b] {
        let check =
            must_sh(&m.dir, "sqlite3 t.db 'PRAGMA integrity_check; SELECT w, count(*), sum(i) FROM t GROUP BY w;'");
        assert_eq!(check, "ok\n1|30|465\n2|30|465\n", "every row of both writers, and a sound database");
    }
}

#[test]
fn t98_a_counter_under_the_lock_counts_every_increment_of_two_mounts() {
    let test = "t98_a_counter_under_the_lock_counts_every_increment_of_two_mounts";
    let Some((c, a, b)) = two_mounts(test, &[], &[], b"0") else { return };
    // Each keeps its file open across its turns: what it reads after a
    // grant must be what the last holder wrote, not what it saw before.
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);
    let rounds = 6;
    for i in 0..2 * rounds {
        let p = if i % 2 == 0 { &mut pa } else { &mut pb };
        p.must("flock x ex");
        let n: u64 = p.must("read x").trim_start_matches("ok ").parse().expect("a number");
        assert_eq!(n, i, "{}: the count before increment {i}", p.name);
        // Same length each time (one digit, then two): pwrite at 0 suffices.
        p.must(&format!("write x 0 {}", n + 1));
        p.must("flock x un");
    }
    pa.must("close x");
    pb.must("close x");
    assert_eq!(c.must_cat("/f"), (2 * rounds).to_string().as_bytes());
}

#[test]
fn t98_a_dead_mounts_locks_pass_on_after_its_session_ttl() {
    let test = "t98_a_dead_mounts_locks_pass_on_after_its_session_ttl";
    let Some((_c, mut a, b)) = two_mounts(test, &["--lock-ttl", "2s"], &[], b"x") else { return };
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);
    pa.must("flock x ex");
    pb.send("flock x ex");
    still_waiting(&mut pb, "a blocking flock");

    // The mount holding the lock dies; its session expires and B is next.
    let pid = a.pid();
    signal(pid, libc::SIGKILL).unwrap();
    a.process.take();
    a.detach();
    assert_eq!(pb.answer("a blocking flock after the holder's mount died"), "ok");
    // And B really holds it: another program on B is kept out.
    let mut pc = with_f_open("pc", &b);
    assert_eq!(pc.run("flock x ex nb"), EAGAIN);
}

#[test]
fn t98_a_paused_mount_cannot_write_under_a_lock_it_lost() {
    let test = "t98_a_paused_mount_cannot_write_under_a_lock_it_lost";
    let Some((c, a, b)) = two_mounts(test, &["--lock-ttl", "1s"], &[], b"0000000000") else { return };
    let mut pa = with_f_open("pa", &a);
    let mut pb = with_f_open("pb", &b);

    // Phase 1: A writes under its exclusive lock.
    pa.must("flock x ex");
    pa.must("write x 0 AAAAAAAAAA");
    pa.must("fsync x");
    assert_eq!(c.must_cat("/f"), b"AAAAAAAAAA");

    // Phase 2: A's mount is paused past its session TTL; B gets the lock and writes.
    let paused = a.pid();
    signal(paused, libc::SIGSTOP).unwrap();
    let resume = Resume(paused);
    pb.must("flock x ex");
    pb.must("write x 0 BBBBBBBBBB");
    pb.must("fsync x");

    // Phase 3: A wakes up, still believing it holds the lock: its write and
    // fsync fail, and not a byte of it lands.
    drop(resume);
    pa.must("write x 0 XXXXXXXXXX");
    let fsync = pa.run("fsync x");
    assert!(fsync.starts_with("err"), "a write under a lost lock must fail, got {fsync}");
    assert_eq!(c.must_cat("/f"), b"BBBBBBBBBB", "the file holds B's bytes");
    assert_eq!(std::fs::read(b.path("f")).unwrap(), b"BBBBBBBBBB");

    // Phase 4: once B lets go, A asks again through the same open file (a
    // new session, a new token) and writes under it.
    pb.must("close x");
    pa.must("flock x ex");
    pa.must("write x 0 CCCCCCCCCC");
    pa.must("fsync x");
    pa.must("close x");
    assert_eq!(c.must_cat("/f"), b"CCCCCCCCCC");
}

/// Sends SIGCONT to a paused process when dropped (also on a panic).
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT).ok();
    }
}
