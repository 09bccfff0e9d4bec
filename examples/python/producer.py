"""A sai producer in Python: one invocation per message over InvokeFunctionStream.

Sends every line of stdin as a payload on one stream (gRPC keeps many in flight) and prints
each result, in the order sent. Generate the stubs once (see README.md here), then:
python producer.py demo-service/demo-function < payloads.txt
"""
import os
import sys

import grpc

sys.path.insert(0, os.environ.get("SAI_PY_GEN", os.path.join(os.path.dirname(__file__), "gen")))
from sai.v1 import invocation_service_pb2 as pb, invocation_service_pb2_grpc  # noqa: E402


def main() -> None:
    service, function = (sys.argv[1] if len(sys.argv) > 1 else "demo-service/demo-function").split("/")
    channel = grpc.insecure_channel(os.environ.get("SAI_SERVER", "127.0.0.1:50051"))
    stub = invocation_service_pb2_grpc.StatefulAsyncInvocationServiceStub(channel)
    payloads = [line.rstrip("\n") for line in sys.stdin]
    messages = (pb.InvokeFunctionRequest(service_name=service, function_name=function, payload=p)
                for p in payloads)
    for result in stub.InvokeFunctionStream(messages):
        if result.code == 0:
            print(f"accepted {result.invocation_id}", flush=True)
        else:  # this message only: the others are unaffected
            code = next((c.name for c in grpc.StatusCode if c.value[0] == result.code), result.code)
            print(f"refused {code}: {result.message}", flush=True)


if __name__ == "__main__":
    main()
