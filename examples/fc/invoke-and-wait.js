// Function Compute code, pointed at sai: submit an async task with FC's official Node.js SDK
// and wait for its result. The same program runs against FC itself; only the endpoint differs:
//   FC:  FC_ENDPOINT=<account-id>.cn-hangzhou.fc.aliyuncs.com FC_PROTOCOL=https
//   sai: FC_ENDPOINT=127.0.0.1:9090 FC_PROTOCOL=http  (sai serve --http 127.0.0.1:9090 --access-keys FILE)
// usage: node invoke-and-wait.js SERVICE/FUNCTION PAYLOAD [TASK_ID]
// env:   ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET, FC_ENDPOINT, FC_PROTOCOL
'use strict';

const FC = require('@alicloud/fc-open20210406');
const { Config } = require('@alicloud/openapi-client');
const { RuntimeOptions } = require('@alicloud/tea-util');

const FINISHED = new Set(['Succeeded', 'Failed', 'Stopped', 'Expired', 'Invalid']);

async function main() {
  const [target, payload, given] = process.argv.slice(2);
  const [service, fn] = target.split('/');
  const taskId = given || `task-${Date.now()}`;
  const client = new FC.default(new Config({
    accessKeyId: process.env.ALIBABA_CLOUD_ACCESS_KEY_ID,
    accessKeySecret: process.env.ALIBABA_CLOUD_ACCESS_KEY_SECRET,
    endpoint: process.env.FC_ENDPOINT || '127.0.0.1:9090',
    protocol: process.env.FC_PROTOCOL || 'http',
  }));
  await client.invokeFunctionWithOptions(service, fn, new FC.InvokeFunctionRequest({ body: Buffer.from(payload) }),
    new FC.InvokeFunctionHeaders({ xFcInvocationType: 'Async', xFcStatefulAsyncInvocationId: taskId }), new RuntimeOptions({}));
  console.log(`submitted ${taskId}`);
  let task;
  for (;;) {
    task = (await client.getStatefulAsyncInvocation(service, fn, taskId, new FC.GetStatefulAsyncInvocationRequest({}))).body;
    if (FINISHED.has(task.status)) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  for (const event of task.events) console.log(`  ${event.eventId} ${event.status} ${event.eventDetail}`);
  console.log(`${taskId} ${task.status}: ${task.returnPayload || task.invocationErrorMessage}`);
}

main().catch((err) => { console.error(`${err.code || ''} ${err.message}`); process.exit(1); });
