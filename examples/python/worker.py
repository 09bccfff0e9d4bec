"""A sai worker in Python: long-polls one function, runs `handle` on each payload, reports.

Generate the stubs once (see README.md here), then: python worker.py demo-service/demo-function
"""
import os
import sys

import grpc

sys.path.insert(0, os.environ.get("SAI_PY_GEN", os.path.join(os.path.dirname(__file__), "gen")))
from sai.v1 import invocation_pb2, worker_service_pb2 as pb, worker_service_pb2_grpc  # noqa: E402


def handle(payload: str) -> str:
    """The function itself: fail on request, else shout the payload back."""
    if payload == "fail":
        raise ValueError("asked to fail")
    return payload.upper()


def main() -> None:
    service, function = (sys.argv[1] if len(sys.argv) > 1 else "demo-service/demo-function").split("/")
    stop_after = int(os.environ.get("SAI_MAX_INVOCATIONS", "0"))  # 0: run forever
    channel = grpc.insecure_channel(os.environ.get("SAI_SERVER", "127.0.0.1:50051"))
    worker = worker_service_pb2_grpc.WorkerServiceStub(channel)
    target = invocation_pb2.FunctionRef(service_name=service, function_name=function)
    done = 0
    while not stop_after or done < stop_after:
        reply = worker.PollInvocations(pb.PollInvocationsRequest(
            functions=[target], worker_id=f"python-{os.getpid()}", max_invocations=10, wait_time_ms=5000))
        for lease in reply.leases:
            try:
                outcome = {"success": pb.CompleteSuccess(return_payload=handle(lease.invocation.invocation_payload))}
            except Exception as error:  # retried per the config, unless reported permanent=True
                outcome = {"failure": pb.CompleteFailure(error_message=str(error))}
            worker.CompleteInvocation(pb.CompleteInvocationRequest(lease_token=lease.lease_token, **outcome))
            print(f"{lease.invocation.invocation_id} attempt {lease.attempt}: {next(iter(outcome))}", flush=True)
            done += 1


if __name__ == "__main__":
    main()
