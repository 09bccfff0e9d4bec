// pg-boss anchor, the shape of `sai bench e2e`: CONCURRENCY producers each send one job at a
// time (~100-byte payload); a worker in this process fetches batches and completes them with
// a no-op; throughput = N / (last completion - first send).
//
// usage: DATABASE_URL=postgres://... node bench.mjs N CONCURRENCY
// env:   BATCH=32 (jobs per fetch)  WORKERS=8 (concurrent fetch loops)  POLL_S=0.5
//        PAYLOAD_BYTES=100  TIMEOUT_S=300
import { performance } from 'node:perf_hooks';
import PgBoss from 'pg-boss';

const N = Number(process.argv[2] ?? 20000);
const CONC = Number(process.argv[3] ?? 64);
const BATCH = Number(process.env.BATCH ?? 32);
const WORKERS = Number(process.env.WORKERS ?? 8);
const POLL_S = Number(process.env.POLL_S ?? 0.5);
const PAYLOAD_BYTES = Number(process.env.PAYLOAD_BYTES ?? 100);
const TIMEOUT_S = Number(process.env.TIMEOUT_S ?? 300);
const queue = `bench_${process.pid}`;

function payload(i) {
  const base = JSON.stringify({ fn: 'noop', i, pad: '' }).length;
  return { fn: 'noop', i, pad: 'x'.repeat(Math.max(0, PAYLOAD_BYTES - base)) };
}

const boss = new PgBoss({ connectionString: process.env.DATABASE_URL, max: 40 });
boss.on('error', (e) => console.error('pg-boss error', e));
await boss.start();
await boss.createQueue(queue);

const sent = new Map();
const latencies = [];
let completed = 0;
let resolveAll;
const allDone = new Promise((r) => (resolveAll = r));
for (let w = 0; w < WORKERS; w++) {
  await boss.work(queue, { batchSize: BATCH, pollingIntervalSeconds: POLL_S }, async (jobs) => {
    const now = performance.now();
    for (const job of jobs) {
      const at = sent.get(job.data.i);
      if (at !== undefined) latencies.push(now - at);
    }
    completed += jobs.length;
    if (completed >= N) resolveAll();
  });
}

const t0 = performance.now();
let next = 0;
async function lane() {
  for (;;) {
    const i = next++;
    if (i >= N) return;
    sent.set(i, performance.now());
    await boss.send(queue, payload(i));
  }
}
await Promise.all(Array.from({ length: CONC }, lane));
const sentAt = performance.now();
const timer = setTimeout(() => {
  console.error(`timeout: ${completed}/${N} completed after ${TIMEOUT_S}s`);
  process.exit(2);
}, TIMEOUT_S * 1000);
await allDone;
clearTimeout(timer);
const t1 = performance.now();
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
const result = {
  peer: 'pg-boss',
  n: N,
  concurrency: CONC,
  batch: BATCH,
  workers: WORKERS,
  poll_s: POLL_S,
  send_per_s: N / ((sentAt - t0) / 1000),
  e2e_per_s: N / ((t1 - t0) / 1000),
  latency_ms: { p50: q(0.5), p99: q(0.99) },
};
console.log('RESULT ' + JSON.stringify(result));
await boss.stop({ graceful: false, wait: false });
process.exit(0);
