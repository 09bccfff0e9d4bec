// A sai worker in Node.js: long-polls one function, runs `handle` on each payload, reports.
// node worker.js demo-service/demo-function   (SAI_SERVER=host:port, SAI_MAX_INVOCATIONS=N)
const { call, workers } = require('./sai');

// The function itself: fail on request, else shout the payload back.
async function handle(payload) {
  if (payload === 'fail') throw new Error('asked to fail');
  return payload.toUpperCase();
}

async function main() {
  const [serviceName, functionName] = (process.argv[2] || 'demo-service/demo-function').split('/');
  const stopAfter = Number(process.env.SAI_MAX_INVOCATIONS || 0); // 0: run forever
  const worker = workers();
  const waitTimeMs = 5000;
  for (let done = 0; !stopAfter || done < stopAfter; ) {
    // The call's deadline above the wait (sai also answers before a shorter one).
    const { leases } = await call(worker, 'PollInvocations', {
      functions: [{ serviceName, functionName }],
      workerId: `node-${process.pid}`,
      maxInvocations: 10,
      waitTimeMs,
    }, waitTimeMs + 5000);
    for (const lease of leases) {
      let outcome;
      try {
        outcome = { success: { returnPayload: await handle(lease.invocation.invocationPayload) } };
      } catch (error) {
        // Retried per the function's config; add `permanent: true` when no retry can help.
        outcome = { failure: { errorMessage: String(error.message) } };
      }
      await call(worker, 'CompleteInvocation', { leaseToken: lease.leaseToken, ...outcome }, 10000);
      console.log(`${lease.invocation.invocationId} attempt ${lease.attempt}: ${Object.keys(outcome)[0]}`);
      done += 1;
    }
  }
  worker.close();
}

main().catch((error) => {
  // Every sai error carries a stable code in the x-fc-error-code header.
  console.error(`worker: ${error.code} ${error.metadata?.get('x-fc-error-code')} ${error.details}`);
  process.exit(1);
});
