"""Function Compute code, pointed at sai: submit an async task with FC's official Python SDK
and wait for its result. The same program runs against FC itself; only the endpoint differs:

  FC:  FC_ENDPOINT=<account-id>.cn-hangzhou.fc.aliyuncs.com FC_PROTOCOL=https
  sai: FC_ENDPOINT=127.0.0.1:9090 FC_PROTOCOL=http   (sai serve --http 127.0.0.1:9090 --access-keys FILE)

usage: python invoke_and_wait.py SERVICE/FUNCTION PAYLOAD [TASK_ID]
env:   ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET, FC_ENDPOINT, FC_PROTOCOL
"""
import os
import sys
import time

from alibabacloud_fc_open20210406 import models as fc
from alibabacloud_fc_open20210406.client import Client
from alibabacloud_tea_openapi import models as open_api
from alibabacloud_tea_util import models as util

FINISHED = {"Succeeded", "Failed", "Stopped", "Expired", "Invalid"}


def main():
    target, payload = sys.argv[1], sys.argv[2]
    service, function = target.split("/")
    task_id = sys.argv[3] if len(sys.argv) > 3 else f"task-{int(time.time() * 1000)}"
    client = Client(open_api.Config(
        access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
        access_key_secret=os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"],
        endpoint=os.environ.get("FC_ENDPOINT", "127.0.0.1:9090"),
        protocol=os.environ.get("FC_PROTOCOL", "http"),
    ))
    client.invoke_function_with_options(
        service, function, fc.InvokeFunctionRequest(body=payload.encode()),
        fc.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_stateful_async_invocation_id=task_id),
        util.RuntimeOptions())
    print(f"submitted {task_id}")
    while True:
        task = client.get_stateful_async_invocation(
            service, function, task_id, fc.GetStatefulAsyncInvocationRequest()).body
        if task.status in FINISHED:
            break
        time.sleep(0.5)
    for event in task.events:
        print(f"  {event.event_id} {event.status} {event.event_detail}")
    print(f"{task_id} {task.status}: {task.return_payload or task.invocation_error_message}")


if __name__ == "__main__":
    main()
