// The dashboard in a real browser: Debian's Chromium driven by playwright-core, beside a gRPC
// client (@grpc/grpc-js) acting on the same server. Run by tests/dashboard.rs:
//   SAI_HTTP=http://127.0.0.1:PORT SAI_SERVER=127.0.0.1:PORT CHROMIUM=/usr/bin/chromium \
//   [SAI_TOKEN=...] [SAI_SCREENSHOT=file.png] node story.js
// Every wait has a deadline for failure only; none waits for time to pass.
'use strict';

const assert = require('assert/strict');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { chromium } = require('playwright-core');

const HTTP = process.env.SAI_HTTP;
const SERVER = process.env.SAI_SERVER;
const TOKEN = process.env.SAI_TOKEN || '';
const DEADLINE_MS = 60000;
const SERVICE = 'dash';
const FUNCTION = 'story';

const definition = protoLoader.loadSync(
  ['sai/v1/invocation_service.proto', 'sai/v1/worker_service.proto'],
  {
    includeDirs: [path.join(__dirname, '..', '..', 'proto')],
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).sai.v1;
const invocations = new v1.StatefulAsyncInvocationService(SERVER, grpc.credentials.createInsecure());
const workers = new v1.WorkerService(SERVER, grpc.credentials.createInsecure());

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  if (TOKEN) metadata.set('authorization', `Bearer ${TOKEN}`);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (error, answer) =>
      (error ? reject(error) : resolve(answer)));
  });
}

const invoke = (id, payload = '') => call(invocations, 'InvokeFunction', {
  serviceName: SERVICE, functionName: FUNCTION, invocationId: id, payload,
});
const list = (request) => call(invocations, 'ListStatefulAsyncInvocations', {
  serviceName: SERVICE, functionName: FUNCTION, ...request,
});

// Every lease on the function's queue, completed with the payload shouted back.
async function runQueuedWork(expected) {
  let done = 0;
  while (done < expected) {
    const { leases } = await call(workers, 'PollInvocations', {
      functions: [{ serviceName: SERVICE, functionName: FUNCTION }],
      workerId: 'dashboard-story',
      maxInvocations: Math.min(10, expected - done),
      waitTimeMs: 5000,
    });
    for (const lease of leases) {
      await call(workers, 'CompleteInvocation', {
        leaseToken: lease.leaseToken,
        success: { returnPayload: lease.invocation.invocationPayload.toUpperCase() },
      });
      done += 1;
    }
  }
}

const rowIds = (page) => page.$$eval('#invocations tbody tr', (rows) => rows.map((r) => r.dataset.id));
const statusCell = (id) => `#invocations tbody tr[data-id="${id}"] .status`;

async function waitForText(page, selector, text) {
  await page.waitForFunction(
    ([s, t]) => document.querySelector(s)?.textContent === t,
    [selector, text],
    { timeout: DEADLINE_MS },
  );
}

// The page's rows once they equal what the API answers.
async function expectRows(page, expected, what) {
  try {
    await page.waitForFunction(
      (ids) => JSON.stringify([...document.querySelectorAll('#invocations tbody tr')].map((r) => r.dataset.id)) === JSON.stringify(ids),
      expected,
      { timeout: DEADLINE_MS },
    );
  } catch (err) {
    assert.deepEqual(await rowIds(page), expected, what);
  }
}

async function applyFilters(page, { status = '', prefix = '', from = '', to = '', order = 'desc', limit = '20' }) {
  await page.selectOption('#f-status', status);
  await page.fill('#f-prefix', prefix);
  await page.fill('#f-from', from);
  await page.fill('#f-to', to);
  await page.selectOption('#f-order', order);
  await page.selectOption('#f-limit', limit);
  await page.click('#f-apply');
}

// An epoch-ms time as the page's datetime-local inputs hold it (UTC, to the millisecond).
const localInput = (ms) => new Date(ms).toISOString().slice(0, 23);

async function main() {
  await invoke('early-1', 'first'); // the function exists before the page opens
  // The browser runs without the libraries preloaded into this process (CI's run with the
  // clock moved ahead preloads libfaketime into everything it starts, and Chromium's many
  // threads and processes have crashed at launch under it). The page reads no clock of its
  // own: every time it shows is the server's, so the date it is tested on is still the
  // server's.
  const browserEnv = { ...process.env };
  delete browserEnv.LD_PRELOAD;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
    env: browserEnv,
  });
  const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
  const problems = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Before it has a token the page is refused, as it must be; the browser logs that.
    const refused = TOKEN && msg.text().includes('status of 401');
    if (msg.type() === 'error' && !refused) problems.push(`console: ${msg.text()}`);
  });
  page.setDefaultTimeout(DEADLINE_MS);
  await page.goto(HTTP);

  if (TOKEN) {
    // The page asks for a token, and nothing is shown until it has one.
    await page.waitForSelector('#auth:not([hidden])');
    assert.equal(await page.$$eval('.function', (f) => f.length), 0);
    await page.fill('#token', TOKEN);
    await page.click('#token-save');
  }

  // The function, selected, with its queued invocation.
  await page.waitForSelector(`.function[data-service="${SERVICE}"][data-function="${FUNCTION}"].selected`);
  await waitForText(page, statusCell('early-1'), 'Enqueued');
  await page.waitForSelector('#live.on');

  // An invocation made over gRPC appears while the page is open, then reaches Succeeded.
  await invoke('live-1', 'hello');
  await waitForText(page, statusCell('live-1'), 'Enqueued');
  await page.waitForFunction(() => document.querySelector('.function.selected .depth')?.textContent === '2', null, { timeout: DEADLINE_MS });
  await runQueuedWork(2);
  await waitForText(page, statusCell('live-1'), 'Succeeded');
  await waitForText(page, statusCell('early-1'), 'Succeeded');

  // Its timeline, payload and return payload.
  await page.click(`#invocations tbody tr[data-id="live-1"]`);
  await waitForText(page, '#d-id', 'live-1');
  await waitForText(page, '#d-return', 'HELLO');
  assert.equal(await page.textContent('#d-payload'), 'hello');
  const timeline = await page.$$eval('#d-events li', (items) => items.map((i) => i.dataset.status));
  assert.deepEqual(timeline, ['Enqueued', 'Dequeued', 'Running', 'Succeeded']);
  assert.equal(await page.isDisabled('#d-stop'), true, 'a finished invocation cannot be stopped');

  // The stop button stops a queued invocation.
  await invoke('stop-me', 'never run');
  await waitForText(page, statusCell('stop-me'), 'Enqueued');
  await page.click(`#invocations tbody tr[data-id="stop-me"]`);
  await waitForText(page, '#d-id', 'stop-me');
  await page.waitForSelector('#d-stop:not([disabled])');
  await page.click('#d-stop');
  await waitForText(page, '#d-status', 'Stopped');
  await waitForText(page, statusCell('stop-me'), 'Stopped');
  const stopped = await call(invocations, 'GetStatefulAsyncInvocation', {
    serviceName: SERVICE, functionName: FUNCTION, invocationId: 'stop-me',
  });
  assert.equal(stopped.status, 'INVOCATION_STATUS_STOPPED');

  // Filters and paging show what the API answers for the same query.
  for (let i = 0; i < 12; i += 1) await invoke(`page-${String(i).padStart(2, '0')}`, `p${i}`);
  await runQueuedWork(4);
  const ids = (answer) => answer.invocations.map((inv) => inv.invocationId);

  await applyFilters(page, { order: 'asc', limit: '10' });
  const first = await list({ sortOrderByTime: 'SORT_ORDER_ASC', limit: 10 });
  await expectRows(page, ids(first), 'oldest first, page 1');
  assert.equal(await page.isDisabled('#page-next'), false);
  await page.click('#page-next');
  const second = await list({ sortOrderByTime: 'SORT_ORDER_ASC', limit: 10, nextToken: first.nextToken });
  await expectRows(page, ids(second), 'oldest first, page 2');
  await page.click('#page-first');
  await expectRows(page, ids(first), 'back to page 1');

  await applyFilters(page, { status: 'Succeeded' });
  const succeeded = await list({ statusName: 'Succeeded' });
  assert.equal(succeeded.invocations.length, 6);
  await expectRows(page, ids(succeeded), 'status Succeeded');

  await applyFilters(page, { prefix: 'page-0', order: 'asc' });
  const prefixed = await list({ invocationIdPrefix: 'page-0', sortOrderByTime: 'SORT_ORDER_ASC' });
  assert.equal(prefixed.invocations.length, 10);
  await expectRows(page, ids(prefixed), 'id prefix page-0');

  const all = await list({ sortOrderByTime: 'SORT_ORDER_ASC', limit: 100 });
  const from = all.invocations[5].startedTime;
  const to = all.invocations[12].startedTime;
  await applyFilters(page, { from: localInput(from), to: localInput(to), order: 'asc', limit: '100' });
  const ranged = await list({ startedTimeBegin: from, startedTimeEnd: to, sortOrderByTime: 'SORT_ORDER_ASC', limit: 100 });
  assert.ok(ranged.invocations.length >= 8 && ranged.invocations.length < all.invocations.length);
  await expectRows(page, ids(ranged), 'started time range');

  await applyFilters(page, {});
  const newest = await list({ limit: 20 });
  await expectRows(page, ids(newest), 'newest first');

  if (process.env.SAI_SCREENSHOT) {
    await page.click(`#invocations tbody tr[data-id="live-1"]`);
    await waitForText(page, '#d-return', 'HELLO');
    await page.screenshot({ path: process.env.SAI_SCREENSHOT });
  }
  assert.deepEqual(problems, [], 'the page logged no errors');
  await browser.close();
  invocations.close();
  workers.close();
  console.log('dashboard story: ok');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
