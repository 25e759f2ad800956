// Drives Shoal's dashboard in headless Chromium (Debian's /usr/bin/chromium,
// through playwright-core) against a running cluster, for
// crates/shoal/tests/it/t95_dashboard.rs, which starts the cluster and
// `shoal http` and hands over a plan:
//
//   node dashboard.mjs PLAN.json
//
// PLAN: { url, chromium, metas: [{addr, pid, url}], chunks: [{addr, pid}],
//         file: {path, dir, local, size, replication, chunks: [{index, replicas}]},
//         dead_after_ms, patience_ms, screenshot,
//         commands: {pause_repair: [argv], resume_repair: [argv]} }
//
// It SIGKILLs the processes the plan names (a chunk server, then the meta
// leader) and checks what the page shows, without ever reloading it. Each
// step prints `ok: ...` with its timing; the first failure prints `FAIL: ...`
// (and saves a screenshot beside the plan's) and exits 1.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const started = Date.now();
const since = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;
const log = (msg) => console.log(`[${since(started)}] ${msg}`);

class Failure extends Error {}

// The test names the profile directory, so it can find (and kill) the
// browser if this script dies without closing it.
const userDataDir = plan.user_data_dir
  ? (mkdirSync(plan.user_data_dir, { recursive: true }), plan.user_data_dir)
  : mkdtempSync(join(tmpdir(), 'shoal-chromium-'));
let context;
let page;

/// Waits until `fn(arg)` is truthy in the page, or fails saying `what`.
async function until(what, fn, arg, timeoutMs = plan.patience_ms) {
  const t = Date.now();
  try {
    await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 100 });
  } catch (e) {
    throw new Failure(`${what}: not seen within ${timeoutMs} ms (${e.message.split('\n')[0]})`);
  }
  return Date.now() - t;
}

function run(argv) {
  execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'], timeout: 60_000 });
}

/// The page was not reloaded since it was opened (the marker is still set).
async function sameDocument() {
  if (!(await page.evaluate(() => window.__shoalMarker === 'opened once'))) {
    throw new Failure('the page was reloaded; it must update in place');
  }
}

async function panelText() {
  return page.evaluate(() =>
    ['error-banner', 'meta-table', 'chunk-table', 'health', 'files']
      .map((id) => `--- #${id}\n${document.getElementById(id)?.innerText ?? ''}`)
      .join('\n'));
}

async function main() {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: plan.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
    ],
    viewport: { width: 1400, height: 1000 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => log(`page error: ${e.message}`));
  await page.goto(plan.url);
  await page.evaluate(() => { window.__shoalMarker = 'opened once'; });

  // Case 1: every meta node, exactly one leader; every chunk server alive.
  let ms = await until('3 meta nodes with exactly one leader',
    () => {
      const rows = [...document.querySelectorAll('#meta-table tbody tr')];
      return rows.length === 3 && rows.filter((r) => r.dataset.role === 'leader').length === 1;
    });
  log(`ok: 3 meta nodes, one leader (${ms} ms)`);
  ms = await until('3 chunk servers alive',
    (n) => {
      const rows = [...document.querySelectorAll('#chunk-table tbody tr')];
      return rows.length === n && rows.every((r) => r.dataset.state === 'alive');
    }, plan.chunks.length);
  log(`ok: ${plan.chunks.length} chunk servers alive (${ms} ms)`);
  await until('health says healthy', () => document.getElementById('health-state').dataset.state === 'healthy');
  log('ok: health is healthy');

  // Case 2: the file browser lists the file just put, and its chunks' servers.
  const f = plan.file;
  const sha256 = createHash('sha256').update(readFileSync(f.local)).digest('hex');
  const dirName = f.dir.split('/').pop();
  await page.click(`#files-table tbody tr[data-path="${f.dir}"] a`);
  ms = await until(`the file browser lists ${f.path}`,
    (p) => !!document.querySelector(`#files-table tbody tr[data-path="${p}"]`), f.path);
  const row = await page.$eval(`#files-table tbody tr[data-path="${f.path}"]`,
    (r) => [...r.cells].map((c) => c.textContent));
  if (row[1] !== 'file' || row[3] !== String(f.replication)) {
    throw new Failure(`the row of ${f.path} says ${JSON.stringify(row)}`);
  }
  log(`ok: ${dirName}/ lists ${f.path} (${JSON.stringify(row)}) (${ms} ms)`);
  await page.click(`#files-table tbody tr[data-path="${f.path}"] a`);
  ms = await until(`the chunk map of ${f.path} with its servers`,
    (want) => {
      const d = document.getElementById('file-detail');
      if (d.hidden || d.dataset.path !== want.path) return false;
      const rows = [...d.querySelectorAll('#chunk-map tbody tr')];
      if (rows.length !== want.chunks.length) return false;
      return want.chunks.every((c) => {
        const r = d.querySelector(`#chunk-map tbody tr[data-chunk-index="${c.index}"]`);
        const shown = r ? [...r.querySelectorAll('[data-addr]')].map((s) => s.dataset.addr).sort() : [];
        return JSON.stringify(shown) === JSON.stringify([...c.replicas].sort());
      });
    }, f);
  log(`ok: the chunk map shows ${f.chunks.length} chunks on the servers stat names (${ms} ms)`);
  const digest = await page.evaluate(async () => {
    const r = await fetch(document.getElementById('download-link').href);
    const bytes = await r.arrayBuffer();
    const sum = await crypto.subtle.digest('SHA-256', bytes);
    return { status: r.status, size: bytes.byteLength, sha256: [...new Uint8Array(sum)].map((b) => b.toString(16).padStart(2, '0')).join('') };
  });
  if (digest.status !== 200 || digest.size !== f.size || digest.sha256 !== sha256) {
    throw new Failure(`the download link gave ${JSON.stringify(digest)}, expected ${f.size} bytes with sha256 ${sha256}`);
  }
  log(`ok: the download link streams the file (${digest.size} bytes, sha256 matches)`);
  if (plan.screenshot) {
    await until('a few throughput samples', () => Number(document.body.dataset.refreshes) >= 3);
    await page.screenshot({ path: plan.screenshot, fullPage: true });
    log(`ok: screenshot in ${plan.screenshot}`);
  }

  // Case 3: a chunk server dies. Repair is paused first, so that the
  // under-replicated state lasts until the page has shown it.
  const victim = plan.chunks.find((c) => f.chunks[0].replicas.includes(c.addr));
  run(plan.commands.pause_repair);
  process.kill(victim.pid, 'SIGKILL');
  const killed = Date.now();
  // The bound only catches a hang; the time it took is logged (expected:
  // dead-after plus a refresh or two).
  await until(`${victim.addr} turns dead`,
    (addr) => document.querySelector(`#chunk-table tbody tr[data-addr="${addr}"]`)?.dataset.state === 'dead',
    victim.addr);
  log(`ok: ${victim.addr} shown dead ${Date.now() - killed} ms after its SIGKILL (dead-after ${plan.dead_after_ms} ms)`);
  await sameDocument();
  ms = await until(`the health panel shows ${f.path} under-replicated`,
    (p) => document.getElementById('health-state').dataset.state === 'degraded' &&
      !!document.querySelector(`#health-problems tbody tr[data-path="${p}"][data-state="under-replicated"]`),
    f.path);
  log(`ok: health shows under-replicated chunks of ${f.path} (${ms} ms)`);
  run(plan.commands.resume_repair);
  ms = await until('health back to healthy after repair',
    () => document.getElementById('health-state').dataset.state === 'healthy' &&
      document.querySelectorAll('#health-problems tbody tr').length === 0);
  log(`ok: healthy again after re-replication (${ms} ms)`);

  // Case 4: the meta leader dies; the page goes on and shows the new one.
  let leaderAddr = await page.$eval('#meta-table tbody tr[data-role="leader"]', (r) => r.dataset.addr);
  let leader = plan.metas.find((m) => m.addr === leaderAddr);
  if (!leader) throw new Failure(`the page's leader ${leaderAddr} is none of ${JSON.stringify(plan.metas)}`);
  const servesPage = (m) => new URL(m.url).origin === new URL(page.url()).origin;
  if (servesPage(leader)) {
    // The node serving the page was a follower when the page was opened and
    // leads now (an election under load): killing it would kill the page's
    // own server. The page is opened once more, from another node.
    const other = plan.metas.find((m) => !servesPage(m));
    log(`the page's own node ${leaderAddr} leads now: the page is opened from ${other.url} instead`);
    await page.goto(other.url);
    await page.evaluate(() => { window.__shoalMarker = 'opened once'; });
    await until('3 meta nodes with exactly one leader, on the page opened again',
      () => [...document.querySelectorAll('#meta-table tbody tr')].filter((r) => r.dataset.role === 'leader').length === 1);
    leaderAddr = await page.$eval('#meta-table tbody tr[data-role="leader"]', (r) => r.dataset.addr);
    leader = plan.metas.find((m) => m.addr === leaderAddr);
    if (!leader || servesPage(leader)) throw new Failure(`no leader to kill but the page's own node: ${leaderAddr}`);
  }
  const before = Number(await page.evaluate(() => document.body.dataset.refreshes));
  process.kill(leader.pid, 'SIGKILL');
  const leaderKilled = Date.now();
  ms = await until('a new leader, and the old one unreachable',
    (old) => {
      const rows = [...document.querySelectorAll('#meta-table tbody tr')];
      const leaders = rows.filter((r) => r.dataset.role === 'leader');
      const gone = rows.find((r) => r.dataset.addr === old);
      return leaders.length === 1 && leaders[0].dataset.addr !== old && gone?.dataset.role === 'unreachable';
    }, leaderAddr);
  const newLeader = await page.$eval('#meta-table tbody tr[data-role="leader"]', (r) => r.dataset.addr);
  log(`ok: new leader ${newLeader} shown ${Date.now() - leaderKilled} ms after the SIGKILL of ${leaderAddr}`);
  ms = await until('refreshes go on without errors',
    (n) => Number(document.body.dataset.refreshes) >= n + 2 && document.getElementById('error-banner').hidden,
    before);
  await sameDocument();
  log(`ok: the page kept refreshing in place (${ms} ms more)`);
}

let code = 0;
try {
  await main();
  log('PASS');
} catch (e) {
  code = 1;
  console.log(`FAIL: ${e instanceof Failure ? e.message : e.stack}`);
  if (page) {
    console.log(await panelText().catch(() => '(no page text)'));
    if (plan.screenshot) {
      await page.screenshot({ path: plan.screenshot.replace(/\.png$/, '') + '-failure.png', fullPage: true }).catch(() => {});
    }
  }
} finally {
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(code);
