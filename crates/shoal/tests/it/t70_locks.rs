//! t70: the lock service, on real processes.
//!
//! - Eight `shoal lock` clients contend for one exclusive lock and append a
//!   line in two steps while holding it: lines never interleave, and they
//!   land in the order the server queued the requests (tickets).
//! - Readers share; a writer waits for them; later readers wait behind it.
//! - A holder killed with SIGKILL loses its lock to the next waiter within
//!   the session TTL plus a second.
//! - A holder stopped past its TTL and resumed is fenced: its next write
//!   fails and leaves no byte behind.
//! - The meta leader fails over while locks are held and queued: the holder
//!   keeps its lock, the waiters keep their order, nothing is granted twice.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use shoal_client::{Client, LockEntry};

/// Runs `script` with sh, with `--meta` of the cluster in SHOAL_META and
/// the admin's credentials in SHOAL_TLS.
fn sh(c: &Cluster, script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).env("SHOAL_META", c.meta_flag()).env("SHOAL_TIMEOUT", "30s");
    cmd.env("SHOAL_TLS", pki().admin());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn lock_state(c: &Cluster, path: &str) -> serde_json::Value {
    serde_json::from_slice(&c.must(&["admin", "locks", "--json", path], None).stdout).unwrap()
}

#[test]
fn t70_contending_clients_append_whole_lines_in_queue_order() {
    let c = Cluster::start(Options::default());
    c.must(&["create", "/log"], None);
    let clients = 8;
    let rounds = 3;
    let children: Vec<_> = (0..clients)
        .map(|i| {
            // Two appends per line: any overlap between holders would split a line.
            // SHOAL_LOCK is TOKEN:MODE:TICKET:PATH; the ticket is the third field.
            let script = format!(
                "for seq in {seqs}; do \
                   {shoal} lock /log -- sh -c 'rest=${{SHOAL_LOCK#*:*:}}; ticket=${{rest%%:*}}; \
                     printf \"c{i} $seq $ticket start\" | {shoal} append /log && \
                     printf \" end\\n\" | {shoal} append /log' || exit 1; \
                 done",
                shoal = SHOAL,
                seqs = (1..=rounds).map(|r| r.to_string()).collect::<Vec<_>>().join(" ")
            );
            sh(&c, &script).spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(c.must_cat("/log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), clients * rounds, "{text}");
    let mut tickets = Vec::new();
    for line in &lines {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(f.len() == 5 && f[3] == "start" && f[4] == "end", "interleaved or torn line {line:?} in:\n{text}");
        tickets.push(f[2].parse::<u64>().unwrap());
    }
    // Exclusive grants go strictly in arrival order: the file's line order
    // (grant order) is the order of the tickets the server handed out.
    let mut sorted = tickets.clone();
    sorted.sort_unstable();
    assert_eq!(tickets, sorted, "grants did not follow the queue order:\n{text}");
    assert_eq!(lock_state(&c, "/log")["holders"].as_array().unwrap().len(), 0, "every lock was released");
}

fn who(entries: &[LockEntry]) -> Vec<(u64, bool)> {
    entries.iter().map(|e| (e.session, e.shared)).collect()
}

#[test]
fn t71_readers_share_and_a_waiting_writer_holds_back_later_readers() {
    let c = Cluster::start(Options::default());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let client = Client::connect(&c.meta_addrs).await.unwrap();
        let ttl = Duration::from_secs(10);
        let (r1, r2, w, r3) = (
            client.open_session(ttl).await.unwrap(),
            client.open_session(ttl).await.unwrap(),
            client.open_session(ttl).await.unwrap(),
            client.open_session(ttl).await.unwrap(),
        );
        let l1 = r1.try_lock("/doc", true).await.unwrap().expect("first reader gets it at once");
        let l2 = r2.try_lock("/doc", true).await.unwrap().expect("a second reader shares it");
        assert!(w.try_lock("/doc", false).await.unwrap().is_none(), "a writer cannot share with readers");
        let (w_id, r3_id) = (w.id(), r3.id());
        let writer = tokio::spawn(async move { (w.lock("/doc", false, None).await, w) });
        wait_for(&client, "/doc", |i| i.queue.len() == 1).await;
        let reader = tokio::spawn(async move { (r3.lock("/doc", true, None).await, r3) });
        let info = wait_for(&client, "/doc", |i| i.queue.len() == 2).await;
        assert_eq!(who(&info.holders), vec![(r1.id(), true), (r2.id(), true)]);
        assert_eq!(who(&info.queue), vec![(w_id, false), (r3_id, true)], "the late reader queues behind the writer");

        r1.unlock(&l1).await.unwrap();
        assert!(!writer.is_finished(), "the writer waits for the last reader");
        r2.unlock(&l2).await.unwrap();
        let (wl, w) = writer.await.unwrap();
        let wl = wl.unwrap();
        assert!(wl.token > l2.token, "fencing tokens grow");
        let info = client.lock_info("/doc").await.unwrap();
        assert_eq!(who(&info.holders), vec![(w_id, false)]);
        assert_eq!(who(&info.queue), vec![(r3_id, true)], "the reader still waits for the writer");
        w.unlock(&wl).await.unwrap();
        let (rl, _r3) = reader.await.unwrap();
        assert!(rl.unwrap().token > wl.token);
    });
}

async fn wait_for(client: &Client, path: &str, ok: impl Fn(&shoal_client::LockInfo) -> bool) -> shoal_client::LockInfo {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = client.lock_info(path).await.unwrap();
        if ok(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "lock state of {path} never got there: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `shoal lock` in its own process group (so the test can signal it
/// and the command it runs together).
fn spawn_holder(c: &Cluster, ttl: &str, path: &str, script: &str) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    shoal_command(&["lock", "--ttl", ttl, path, "--", "sh", "-c", script])
        .env("SHOAL_META", c.meta_flag())
        .env("SHOAL_TIMEOUT", "30s")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal_group(pid: u32, sig: libc::c_int) {
    signal(-(pid as i32), sig).expect("signal the holder's process group");
}

#[test]
fn t72_a_killed_holder_loses_its_lock_within_the_ttl() {
    let c = Cluster::start(Options::default());
    let ttl = Duration::from_secs(2);
    let mut holder = spawn_holder(&c, "2s", "/k", "sleep 60");
    wait_until("the holder holds /k", || lock_state(&c, "/k")["holders"].as_array().unwrap().len() == 1);
    let killed_at = Instant::now();
    signal_group(holder.id(), libc::SIGKILL);
    holder.wait().unwrap();
    let out = sh(&c, &format!("{SHOAL} lock /k -- true")).output().unwrap();
    let waited = killed_at.elapsed();
    assert!(out.status.success(), "the next waiter got the lock: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("lock passed on {waited:?} after the holder's SIGKILL (TTL {ttl:?})");
    assert!(waited <= ttl + Duration::from_secs(1), "took {waited:?}, more than the TTL plus 1 s");
}

#[test]
fn t73_a_stalled_holder_is_fenced_and_writes_nothing_after_losing_its_lock() {
    let c = Cluster::start(Options::default());
    c.must(&["create", "/fence"], None);
    let ready = c.tmp.path().join("ready");
    let script = format!(
        "printf A1 | {SHOAL} append /fence && : > {ready} && sleep 1 && printf A2 | {SHOAL} append /fence",
        ready = ready.display()
    );
    let holder = spawn_holder(&c, "2s", "/fence", &script);
    wait_until("the holder wrote A1", || ready.exists());
    // Stall the holder (and the command it runs) well past its TTL.
    signal_group(holder.id(), libc::SIGSTOP);
    let b = sh(&c, &format!("printf B1 | {SHOAL} append /fence")).output().unwrap();
    assert!(b.status.success(), "the next writer got the lock: {}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(c.must_cat("/fence"), b"A1B1");
    signal_group(holder.id(), libc::SIGCONT);
    let out = holder.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the resumed holder's write must fail: {err}");
    assert!(err.contains("fenced"), "the error says the writer was fenced: {err}");
    assert_eq!(c.must_cat("/fence"), b"A1B1", "nothing of the fenced write landed");
}

#[test]
fn t74_locks_survive_a_meta_leader_failover() {
    let mut c = Cluster::start(Options { meta_nodes: 3, ..Options::default() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = rt.block_on(Client::connect_with_timeout(&c.meta_addrs, PATIENCE)).unwrap();
    let ttl = Duration::from_secs(5);
    let (holder, lock, w1, w2) = rt.block_on(async {
        let holder = client.open_session(ttl).await.unwrap();
        let lock = holder.lock("/f", false, None).await.unwrap();
        let w1 = client.open_session(ttl).await.unwrap();
        let w2 = client.open_session(ttl).await.unwrap();
        (holder, lock, w1, w2)
    });
    let (w1_id, w2_id) = (w1.id(), w2.id());
    let t1 = rt.spawn(async move { (w1.lock("/f", false, None).await, w1) });
    rt.block_on(wait_for(&client, "/f", |i| i.queue.len() == 1));
    let t2 = rt.spawn(async move { (w2.lock("/f", false, None).await, w2) });
    let before = rt.block_on(wait_for(&client, "/f", |i| i.queue.len() == 2));

    let leader = c.wait_leader();
    c.kill_meta(leader);
    // Longer than the TTL: sessions must be kept alive through the new leader.
    std::thread::sleep(ttl + Duration::from_secs(1));
    let after = rt.block_on(client.lock_info("/f")).unwrap();
    assert_eq!(who(&after.holders), who(&before.holders), "the holder kept its lock");
    assert_eq!(after.holders[0].token, lock.token);
    assert_eq!(who(&after.queue), vec![(w1_id, false), (w2_id, false)], "the waiters kept their places");
    assert!(holder.is_alive());

    rt.block_on(holder.unlock(&lock)).unwrap();
    let (l1, w1) = rt.block_on(t1).unwrap();
    let l1 = l1.unwrap();
    assert!(l1.token > lock.token);
    let info = rt.block_on(client.lock_info("/f")).unwrap();
    assert_eq!(who(&info.holders), vec![(w1_id, false)], "exactly one holder");
    rt.block_on(w1.unlock(&l1)).unwrap();
    let (l2, _w2) = rt.block_on(t2).unwrap();
    assert!(l2.unwrap().token > l1.token);
    c.start_meta(leader);
}
