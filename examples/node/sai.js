// Loads sai's protos for @grpc/grpc-js, with the loader options that make its messages
// pleasant in JavaScript, and makes clients for SAI_SERVER (host:port).
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const definition = protoLoader.loadSync(
  ['sai/v1/invocation_service.proto', 'sai/v1/worker_service.proto'],
  {
    includeDirs: [process.env.SAI_PROTO_DIR || path.join(__dirname, '..', '..', 'proto')],
    longs: Number, // every int64 of sai (epoch ms, counts, sequences) fits in 2^53
    enums: String, // 'INVOCATION_STATUS_SUCCEEDED', not 4
    defaults: true, // '' and 0 are present: a last page has nextToken ''
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).sai.v1;
const server = process.env.SAI_SERVER || '127.0.0.1:50051';
const credentials = grpc.credentials.createInsecure();

// Call `method` of `client` with `request`, as a promise, with a deadline `ms` from now.
function call(client, method, request, ms) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + ms }, (error, answer) =>
      error ? reject(error) : resolve(answer));
  });
}

module.exports = {
  call,
  invocations: () => new v1.StatefulAsyncInvocationService(server, credentials),
  workers: () => new v1.WorkerService(server, credentials),
};
