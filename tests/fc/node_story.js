// FC's Node.js SDKs, unchanged but for the endpoint, against sai's REST API:
// @alicloud/fc-open20210406 (2021-04-06, ACS3-signed) through every task and config
// operation, and @alicloud/fc2 (2016-08-15, FC-signed) through invoke and its config
// operations. A sai worker runs the invocations over gRPC. Run by tests/fc_sdk.rs with
// SAI_FC_ENDPOINT, SAI_AK, SAI_SK, SAI_ACCOUNT, SAI_BIN, SAI_SERVER.
'use strict';

const assert = require('assert/strict');
const { execFileSync } = require('child_process');
const FC2 = require('@alicloud/fc2');
const FcOpen = require('@alicloud/fc-open20210406');
const $OpenApi = require('@alicloud/openapi-client');
const $Util = require('@alicloud/tea-util');

const Client = FcOpen.default;
const { SAI_FC_ENDPOINT: ENDPOINT, SAI_AK: AK, SAI_SK: SK, SAI_ACCOUNT: ACCOUNT } = process.env;
const SERVICE = 'nodesvc';

function openClient(secret = SK) {
  return new Client(new $OpenApi.Config({ accessKeyId: AK, accessKeySecret: secret, endpoint: ENDPOINT, protocol: 'http' }));
}

async function refused(call, status, code) {
  try {
    await call();
  } catch (err) {
    const got = err.code || (err.data && err.data.Code);
    assert.equal(got, code, `${err.message}`);
    if (status) assert.equal(err.statusCode || (err.data && err.data.statusCode), status, err.message);
    return err;
  }
  throw new Error(`expected ${code}`);
}

function runWorker(fn, count) {
  execFileSync(process.env.SAI_BIN, ['--server', process.env.SAI_SERVER, '--account', ACCOUNT, 'worker',
    '--function', `${SERVICE}/${fn}`, '--exec', 'tr a-z A-Z', '--max-invocations', String(count)],
  { stdio: 'inherit', timeout: 120000 });
}

const asyncHeaders = (id) => new FcOpen.InvokeFunctionHeaders({ xFcInvocationType: 'Async', ...(id ? { xFcStatefulAsyncInvocationId: id } : {}) });
const runtime = () => new $Util.RuntimeOptions({});

async function fcOpenStory() {
  const fn = 'nodeopen';
  const fc = openClient();
  const put = await fc.putFunctionAsyncInvokeConfig(SERVICE, fn, new FcOpen.PutFunctionAsyncInvokeConfigRequest({
    qualifier: 'LATEST', maxAsyncRetryAttempts: 0, statefulInvocation: true,
    destinationConfig: new FcOpen.DestinationConfig({ onSuccess: new FcOpen.Destination({ destination: `acs:fc:::services/${SERVICE}/functions/done` }) }),
  }));
  assert.equal(put.body.service, SERVICE);
  assert.equal(put.body.maxAsyncRetryAttempts, 0);
  const got = await fc.getFunctionAsyncInvokeConfig(SERVICE, fn, new FcOpen.GetFunctionAsyncInvokeConfigRequest({ qualifier: 'LATEST' }));
  assert.equal(got.body.destinationConfig.onSuccess.destination, `acs:fc:::services/${SERVICE}/functions/done`);
  const configs = await fc.listFunctionAsyncInvokeConfigs(SERVICE, fn, new FcOpen.ListFunctionAsyncInvokeConfigsRequest({ limit: 10 }));
  assert.deepEqual(configs.body.configs.map((c) => c.qualifier), ['LATEST']);

  const first = await fc.invokeFunctionWithOptions(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('hello'), qualifier: 'LATEST' }), asyncHeaders('node-1'), runtime());
  assert.equal(first.statusCode, 202);
  assert.equal(first.headers['x-fc-stateful-async-invocation-id'], 'node-1');
  const second = await fc.invokeFunctionWithOptions(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('world') }), asyncHeaders(), runtime());
  const generated = second.headers['x-fc-stateful-async-invocation-id'];
  assert.ok(generated && generated !== 'node-1');
  await refused(() => fc.invokeFunctionWithOptions(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('x') }), asyncHeaders('node-1'), runtime()),
    409, 'StatefulAsyncInvocationAlreadyExists');
  await refused(() => fc.invokeFunction(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('sync') })), 400, 'InvalidArgument');

  await fc.invokeFunctionWithOptions(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('stop me') }), asyncHeaders('node-stop'), runtime());
  const stopped = await fc.stopStatefulAsyncInvocation(SERVICE, fn, 'node-stop', new FcOpen.StopStatefulAsyncInvocationRequest({}));
  assert.ok([200, 204].includes(stopped.statusCode));

  runWorker(fn, 2);
  const inv = (await fc.getStatefulAsyncInvocation(SERVICE, fn, 'node-1', new FcOpen.GetStatefulAsyncInvocationRequest({ qualifier: 'LATEST' }))).body;
  assert.equal(inv.status, 'Succeeded');
  assert.equal(inv.returnPayload, 'HELLO');
  assert.equal(typeof inv.startedTime, 'number');
  assert.deepEqual(inv.events.map((e) => e.status), ['Enqueued', 'Dequeued', 'Running', 'Succeeded']);
  await refused(() => fc.getStatefulAsyncInvocation(SERVICE, fn, 'nope', new FcOpen.GetStatefulAsyncInvocationRequest({})), 404, 'StatefulAsyncInvocationNotFound');

  const seen = [];
  let token;
  do {
    const page = await fc.listStatefulAsyncInvocations(SERVICE, fn, new FcOpen.ListStatefulAsyncInvocationsRequest({ limit: 2, nextToken: token, sortOrderByTime: 'asc' }));
    seen.push(...page.body.invocations.map((i) => i.invocationId));
    token = page.body.nextToken;
  } while (token);
  assert.deepEqual(seen, ['node-1', generated, 'node-stop']);
  const filtered = await fc.listStatefulAsyncInvocations(SERVICE, fn, new FcOpen.ListStatefulAsyncInvocationsRequest({ status: 'Stopped', includePayload: true, invocationIdPrefix: 'node-' }));
  assert.deepEqual(filtered.body.invocations.map((i) => [i.invocationId, i.invocationPayload]), [['node-stop', 'stop me']]);

  const functions = await fc.listStatefulAsyncInvocationFunctions(new FcOpen.ListStatefulAsyncInvocationFunctionsRequest({ limit: 100 }));
  assert.ok(functions.body.data.some((f) => f.serviceName === SERVICE && f.functionName === fn), JSON.stringify(functions.body));

  await fc.deleteFunctionAsyncInvokeConfig(SERVICE, fn, new FcOpen.DeleteFunctionAsyncInvokeConfigRequest({ qualifier: 'LATEST' }));
  await refused(() => fc.getFunctionAsyncInvokeConfig(SERVICE, fn, new FcOpen.GetFunctionAsyncInvokeConfigRequest({ qualifier: 'LATEST' })), 404, 'AsyncConfigNotExists');
  await refused(() => openClient('wrong-secret-0123456789').invokeFunctionWithOptions(SERVICE, fn, new FcOpen.InvokeFunctionRequest({ body: Buffer.from('x') }), asyncHeaders('node-forged'), runtime()),
    403, 'SignatureNotMatch');
}

async function fc2Story() {
  const fn = 'nodefc2';
  const fc = new FC2(ACCOUNT, { accessKeyID: AK, accessKeySecret: SK, region: 'cn-hangzhou', endpoint: `http://${ENDPOINT}` });
  const put = await fc.putFunctionAsyncConfig(SERVICE, fn, 'LATEST', { maxAsyncRetryAttempts: 1, statefulInvocation: true });
  assert.equal(put.data.maxAsyncRetryAttempts, 1);
  const got = await fc.getFunctionAsyncConfig(SERVICE, fn, 'LATEST');
  assert.equal(got.data.statefulInvocation, true);
  const listed = await fc.listFunctionAsyncConfigs(SERVICE, fn, { limit: 5 });
  assert.deepEqual(listed.data.configs.map((c) => c.qualifier), ['LATEST']);

  const withId = await fc.invokeFunction(SERVICE, fn, 'hi', { 'x-fc-invocation-type': 'Async', 'x-fc-stateful-async-invocation-id': 'fc2node-1' }, 'LATEST');
  assert.equal(withId.headers['x-fc-stateful-async-invocation-id'], 'fc2node-1');
  const without = await fc.invokeFunction(SERVICE, fn, Buffer.from('there'), { 'x-fc-invocation-type': 'Async' });
  assert.ok(without.headers['x-fc-stateful-async-invocation-id']);
  await refused(() => fc.invokeFunction(SERVICE, fn, 'again', { 'x-fc-invocation-type': 'Async', 'x-fc-stateful-async-invocation-id': 'fc2node-1' }, 'LATEST'),
    null, 'StatefulAsyncInvocationAlreadyExists');
  await refused(() => fc.invokeFunction(SERVICE, fn, 'sync'), null, 'InvalidArgument');
  const forger = new FC2(ACCOUNT, { accessKeyID: AK, accessKeySecret: 'wrong-secret-0123456789', region: 'cn-hangzhou', endpoint: `http://${ENDPOINT}` });
  await refused(() => forger.invokeFunction(SERVICE, fn, 'x', { 'x-fc-invocation-type': 'Async', 'x-fc-stateful-async-invocation-id': 'fc2node-forged' }), null, 'SignatureNotMatch');
  const other = new FC2('another-account', { accessKeyID: AK, accessKeySecret: SK, region: 'cn-hangzhou', endpoint: `http://${ENDPOINT}` });
  await refused(() => other.getFunctionAsyncConfig(SERVICE, fn, 'LATEST'), null, 'AccessDenied');

  await fc.deleteFunctionAsyncConfig(SERVICE, fn, 'LATEST');
  await refused(() => fc.getFunctionAsyncConfig(SERVICE, fn, 'LATEST'), null, 'AsyncConfigNotExists');
}

(async () => {
  if (process.env.SAI_FC_SKEWED === '1') {
    // The process clock moved by faketime: the ACS3 date is too far from the server's.
    await refused(() => openClient().invokeFunctionWithOptions(SERVICE, 'nodeopen', new FcOpen.InvokeFunctionRequest({ body: Buffer.from('late') }),
      asyncHeaders('node-skewed'), runtime()), 403, 'RequestTimeTooSkewed');
    const fc2 = new FC2(ACCOUNT, { accessKeyID: AK, accessKeySecret: SK, region: 'cn-hangzhou', endpoint: `http://${ENDPOINT}` });
    await refused(() => fc2.invokeFunction(SERVICE, 'nodefc2', 'late', { 'x-fc-invocation-type': 'Async', 'x-fc-stateful-async-invocation-id': 'fc2node-skewed' }),
      null, 'RequestTimeTooSkewed');
    console.log('node skewed: ok');
    return;
  }
  await fcOpenStory();
  await fc2Story();
  console.log('node story: ok');
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
