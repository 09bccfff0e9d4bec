// Measures the dashboard in Debian's headless Chromium; run by bench/dashboard.sh, which
// starts the server on a seeded data directory (account "bench", function
// seeded/function-0 holding STORED finished invocations).
//  1. first page: from navigation start to the first page's rows on screen, LOADS times.
//  2. commit -> visible: RATE invocations/s over gRPC for SECONDS_LIVE, a worker running them;
//     from each acknowledgement (the commit) to the page showing the new row, and from each
//     completion's acknowledgement to the row showing Succeeded. Both clocks are this
//     machine's wall clock, read in the browser as performance.timeOrigin + performance.now().
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { chromium } = require('playwright-core');

const ACCOUNT = 'bench';
const SERVICE = 'seeded';
const FUNCTION = 'function-0';
const RATE = Number(process.env.RATE || 100);
const SECONDS_LIVE = Number(process.env.SECONDS_LIVE || 30);
const LOADS = Number(process.env.LOADS || 7);

const definition = protoLoader.loadSync(
  ['sai/v1/invocation_service.proto', 'sai/v1/worker_service.proto'],
  { includeDirs: [path.join(__dirname, '..', '..', 'proto')], longs: Number, enums: String, defaults: true, oneofs: true },
);
const v1 = grpc.loadPackageDefinition(definition).sai.v1;
const credentials = grpc.credentials.createInsecure();
const invocations = new v1.StatefulAsyncInvocationService(process.env.SAI_SERVER, credentials);
const workers = new v1.WorkerService(process.env.SAI_SERVER, credentials);

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  metadata.set('x-fc-account-id', ACCOUNT);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 30000 }, (error, answer) =>
      (error ? reject(error) : resolve(answer)));
  });
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
const summary = (values) => ({
  count: values.length,
  p50_ms: Math.round(percentile(values, 50)),
  p99_ms: Math.round(percentile(values, 99)),
  max_ms: Math.round(Math.max(...values)),
});

async function openPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
  await page.addInitScript((account) => sessionStorage.setItem('sai-account', account), ACCOUNT);
  return page;
}

async function firstPage(browser) {
  const times = [];
  for (let i = 0; i < LOADS; i += 1) {
    const page = await openPage(browser);
    await page.goto(process.env.SAI_HTTP, { waitUntil: 'commit' });
    await page.waitForSelector('#invocations tbody tr', { timeout: 60000 });
    times.push(await page.evaluate(() => performance.now()));
    await page.close();
  }
  return summary(times.slice(1)); // the first load also starts the browser's caches
}

async function commitToVisible(browser) {
  const page = await openPage(browser);
  await page.goto(process.env.SAI_HTTP);
  await page.waitForSelector('#invocations tbody tr');
  // The newest 100 stay on the page for a second each at 100/s, long enough to see them run.
  await page.selectOption('#f-limit', '100');
  await page.click('#f-apply');
  await page.waitForFunction(() => document.querySelectorAll('#invocations tbody tr').length === 100);
  await page.waitForSelector('#live.on');
  // Record when each row appears and when each shows Succeeded.
  await page.evaluate(() => {
    window.seen = { added: {}, succeeded: {} };
    const now = () => performance.timeOrigin + performance.now();
    new MutationObserver((mutations) => {
      for (const m of mutations) {
        for (const node of m.addedNodes) {
          if (node.nodeType === 1 && node.tagName === 'TR' && !(node.dataset.id in window.seen.added)) {
            window.seen.added[node.dataset.id] = now();
            if (node.dataset.status === 'Succeeded') window.seen.succeeded[node.dataset.id] = now();
          }
        }
        if (m.type === 'attributes' && m.target.tagName === 'TR' && m.target.dataset.status === 'Succeeded'
          && !(m.target.dataset.id in window.seen.succeeded)) {
          window.seen.succeeded[m.target.dataset.id] = now();
        }
      }
    }).observe(document.querySelector('#invocations tbody'), { childList: true, subtree: true, attributes: true, attributeFilter: ['data-status'] });
  });

  const committed = {};
  const completed = {};
  let running = true;
  const worker = (async () => {
    while (running) {
      const { leases } = await call(workers, 'PollInvocations', {
        functions: [{ serviceName: SERVICE, functionName: FUNCTION }], workerId: 'bench', maxInvocations: 32, waitTimeMs: 500,
      });
      if (leases.length === 0) continue;
      const answer = await call(workers, 'CompleteInvocations', {
        completions: leases.map((l) => ({ leaseToken: l.leaseToken, success: { returnPayload: 'ok' } })),
      });
      const at = Date.now();
      answer.results.forEach((r, i) => { if (r.code === 0) completed[leases[i].invocation.invocationId] = at; });
    }
  })();
  const total = RATE * SECONDS_LIVE;
  const started = Date.now();
  const pending = [];
  for (let n = 0; n < total; n += 1) {
    const due = started + (n * 1000) / RATE;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const id = `live-${started}-${n}`;
    pending.push(call(invocations, 'InvokeFunction', { serviceName: SERVICE, functionName: FUNCTION, invocationId: id, payload: 'x' })
      .then(() => { committed[id] = Date.now(); }));
  }
  await Promise.all(pending);
  // Until every invocation has been run and seen as Succeeded (or 30 s at most).
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline) {
    const seen = await page.evaluate(() => Object.keys(window.seen.succeeded).length);
    if (seen >= total && Object.keys(completed).length >= total) break;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  running = false;
  await worker;
  const seen = await page.evaluate(() => window.seen);
  const appear = Object.keys(committed).filter((id) => id in seen.added).map((id) => seen.added[id] - committed[id]);
  const succeed = Object.keys(completed).filter((id) => id in seen.succeeded).map((id) => seen.succeeded[id] - completed[id]);
  await page.close();
  return {
    offered_per_s: RATE,
    invoked: total,
    appeared: summary(appear),
    missing_rows: total - appear.length,
    succeeded: summary(succeed),
    missing_succeeded: Object.keys(completed).length - succeed.length,
  };
}

async function main() {
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const result = {
    stored: Number(process.env.STORED),
    first_page_ms: await firstPage(browser),
    commit_to_visible_ms: await commitToVisible(browser),
    chromium: browser.version(),
  };
  await browser.close();
  invocations.close();
  workers.close();
  console.log(JSON.stringify(result, null, 2));
}

main().catch((err) => { console.error(err); process.exit(1); });
