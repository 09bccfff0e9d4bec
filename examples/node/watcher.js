// Follows every status change of one function live, from the oldest change sai still keeps,
// printing "<id> <status>" until SAI_UNTIL_ENDED invocations have ended (0: forever).
// node watcher.js demo-service/demo-function
const { invocations } = require('./sai');

const TERMINAL = ['SUCCEEDED', 'FAILED', 'STOPPED', 'EXPIRED', 'INVALID'];
const [serviceName, functionName] = (process.argv[2] || 'demo-service/demo-function').split('/');
const untilEnded = Number(process.env.SAI_UNTIL_ENDED || 0);
const client = invocations();
// No deadline on a watch: it runs until cancelled. `fromOldest` also replays what happened
// just before it opened; a resumed watch passes `fromSequence` (the last sequence seen).
const stream = client.WatchInvocations({ serviceName, functionName, fromOldest: true });
let ended = 0;
stream.on('data', ({ sequence, event, invocation }) => {
  const status = event.status.replace('INVOCATION_STATUS_', '');
  console.log(`${invocation.invocationId} ${status} (sequence ${sequence})`);
  if (TERMINAL.includes(status) && untilEnded && ++ended === untilEnded) stream.cancel();
});
// Every stream needs an 'error' handler; CANCELLED after our own cancel() is the normal end.
stream.on('error', (error) => {
  if (error.code !== 1) {
    console.error(`watcher: ${error.code} ${error.metadata?.get('x-fc-error-code')} ${error.details}`);
    process.exitCode = 1;
  }
  client.close();
});
