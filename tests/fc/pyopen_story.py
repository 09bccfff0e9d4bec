"""FC's Python SDK for the 2021-04-06 API (alibabacloud-fc-open20210406), unchanged but for
the endpoint, through every operation it has against sai; a sai worker runs the invocations
over gRPC. Run by tests/fc_sdk.rs with:
  SAI_FC_ENDPOINT=127.0.0.1:PORT SAI_AK=... SAI_SK=... SAI_ACCOUNT=... SAI_BIN=.../sai
  SAI_SERVER=http://127.0.0.1:PORT python pyopen_story.py
Every check is on the SDK's own typed results."""
import os
import subprocess
import sys
import time

from alibabacloud_fc_open20210406 import models as fc
from alibabacloud_fc_open20210406.client import Client
from alibabacloud_tea_openapi import models as open_api
from alibabacloud_tea_util import models as util
from Tea.exceptions import TeaException

SERVICE, FUNCTION = "pysvc", "pyopen"
ENDPOINT = os.environ["SAI_FC_ENDPOINT"]
AK, SK, ACCOUNT = os.environ["SAI_AK"], os.environ["SAI_SK"], os.environ["SAI_ACCOUNT"]


def client(secret=SK):
    return Client(open_api.Config(access_key_id=AK, access_key_secret=secret,
                                  endpoint=ENDPOINT, protocol="http"))


def refused(call, status, code):
    """The SDK raises with FC's code and HTTP status, and the server's request id."""
    try:
        call()
    except TeaException as err:
        assert err.code == code, (err.code, err.message)
        assert err.data and err.data.get("statusCode") == status, err.data
        assert err.data.get("RequestId"), err.data
        return err
    raise AssertionError(f"expected {code}")


def run_worker(count):
    """A sai worker over gRPC: shouts each payload back, `count` invocations, then exits."""
    subprocess.run(
        [os.environ["SAI_BIN"], "--server", os.environ["SAI_SERVER"], "--account", ACCOUNT,
         "worker", "--function", f"{SERVICE}/{FUNCTION}", "--exec", "tr a-z A-Z",
         "--max-invocations", str(count)],
        check=True, timeout=120)


def main():
    fcc = client()
    if os.environ.get("SAI_FC_SKEWED") == "1":
        # The process clock moved by faketime: the ACS3 date is too far from the server's.
        refused(lambda: fcc.invoke_function_with_options(
            SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"late"),
            fc.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_stateful_async_invocation_id="py-skewed"),
            util.RuntimeOptions()), 403, "RequestTimeTooSkewed")
        print("pyopen skewed: ok")
        return

    # Configs: put, get, list.
    put = fcc.put_function_async_invoke_config(SERVICE, FUNCTION, fc.PutFunctionAsyncInvokeConfigRequest(
        qualifier="LATEST", max_async_retry_attempts=1, max_async_event_age_in_seconds=3600,
        stateful_invocation=True,
        destination_config=fc.DestinationConfig(on_failure=fc.Destination(
            destination="acs:fc:::services/pysvc/functions/failures"))))
    assert put.status_code == 200
    assert put.body.service == SERVICE and put.body.function == FUNCTION, put.body
    assert put.body.max_async_retry_attempts == 1 and put.body.stateful_invocation is True
    got = fcc.get_function_async_invoke_config(SERVICE, FUNCTION, fc.GetFunctionAsyncInvokeConfigRequest(qualifier="LATEST"))
    assert got.body.max_async_event_age_in_seconds == 3600
    assert got.body.destination_config.on_failure.destination.endswith("functions/failures")
    assert got.body.created_time.endswith("Z"), got.body.created_time
    configs = fcc.list_function_async_invoke_configs(SERVICE, FUNCTION, fc.ListFunctionAsyncInvokeConfigsRequest(limit=10))
    assert [c.qualifier for c in configs.body.configs] == ["LATEST"], configs.body

    # Invoke with an id, without one, and the same id again.
    invoke = fc.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_stateful_async_invocation_id="py-1")
    first = fcc.invoke_function_with_options(SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"hello", qualifier="LATEST"),
                                             invoke, util.RuntimeOptions())
    assert first.status_code == 202, first.status_code
    assert first.headers["x-fc-stateful-async-invocation-id"] == "py-1", first.headers
    second = fcc.invoke_function_with_options(SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"world"),
                                              fc.InvokeFunctionHeaders(x_fc_invocation_type="Async"), util.RuntimeOptions())
    generated = second.headers["x-fc-stateful-async-invocation-id"]
    assert generated and generated != "py-1", second.headers
    refused(lambda: fcc.invoke_function_with_options(SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"again"),
                                                     invoke, util.RuntimeOptions()),
            409, "StatefulAsyncInvocationAlreadyExists")
    refused(lambda: fcc.invoke_function(SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"sync")),
            400, "InvalidArgument")

    # A third one, stopped while queued.
    fcc.invoke_function_with_options(SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"stop me"),
                                     fc.InvokeFunctionHeaders(x_fc_invocation_type="Async",
                                                              x_fc_stateful_async_invocation_id="py-stop"),
                                     util.RuntimeOptions())
    stopped = fcc.stop_stateful_async_invocation(SERVICE, FUNCTION, "py-stop", fc.StopStatefulAsyncInvocationRequest())
    assert stopped.status_code in (200, 204)
    refused(lambda: fcc.stop_stateful_async_invocation(SERVICE, FUNCTION, "py-stop", fc.StopStatefulAsyncInvocationRequest()),
            412, "StatefulAsyncInvocationAlreadyCompleted")

    # The worker runs the two others over gRPC; get shows each with its events.
    run_worker(2)
    done = fcc.get_stateful_async_invocation(SERVICE, FUNCTION, "py-1", fc.GetStatefulAsyncInvocationRequest(qualifier="LATEST"))
    inv = done.body
    assert inv.status == "Succeeded", inv.status
    assert inv.invocation_id == "py-1" and inv.service_name == SERVICE and inv.function_name == FUNCTION
    assert inv.return_payload == "HELLO", inv.return_payload
    assert inv.invocation_payload == "hello"
    assert isinstance(inv.started_time, int) and inv.end_time >= inv.started_time
    assert [e.status for e in inv.events] == ["Enqueued", "Dequeued", "Running", "Succeeded"], inv.events
    assert [e.event_id for e in inv.events] == [1, 2, 3, 4]
    refused(lambda: fcc.get_stateful_async_invocation(SERVICE, FUNCTION, "nope", fc.GetStatefulAsyncInvocationRequest()),
            404, "StatefulAsyncInvocationNotFound")

    # List: paging, filters, payloads.
    seen, token = [], None
    while True:
        page = fcc.list_stateful_async_invocations(SERVICE, FUNCTION, fc.ListStatefulAsyncInvocationsRequest(
            limit=1, next_token=token, sort_order_by_time="asc"))
        seen += [i.invocation_id for i in page.body.invocations]
        token = page.body.next_token
        if not token:
            break
    assert seen == ["py-1", generated, "py-stop"], seen
    succeeded = fcc.list_stateful_async_invocations(SERVICE, FUNCTION, fc.ListStatefulAsyncInvocationsRequest(
        status="Succeeded", include_payload=True))
    assert sorted(i.invocation_id for i in succeeded.body.invocations) == sorted(["py-1", generated])
    assert {i.invocation_payload for i in succeeded.body.invocations} == {"hello", "world"}
    prefixed = fcc.list_stateful_async_invocations(SERVICE, FUNCTION, fc.ListStatefulAsyncInvocationsRequest(
        invocation_id_prefix="py-", sort_order_by_time="desc", started_time_begin=inv.started_time,
        started_time_end=int(time.time() * 1000) + 60_000))
    assert [i.invocation_id for i in prefixed.body.invocations] == ["py-stop", "py-1"], prefixed.body
    assert prefixed.body.invocations[0].status == "Stopped"
    refused(lambda: fcc.list_stateful_async_invocations(SERVICE, FUNCTION, fc.ListStatefulAsyncInvocationsRequest(
        status="Sleeping")), 400, "InvalidArgument")

    functions = fcc.list_stateful_async_invocation_functions(fc.ListStatefulAsyncInvocationFunctionsRequest(limit=10))
    assert [(f.service_name, f.function_name) for f in functions.body.data] == [(SERVICE, FUNCTION)], functions.body

    # Delete the config; it is gone.
    deleted = fcc.delete_function_async_invoke_config(SERVICE, FUNCTION, fc.DeleteFunctionAsyncInvokeConfigRequest(qualifier="LATEST"))
    assert deleted.status_code in (200, 204)
    refused(lambda: fcc.get_function_async_invoke_config(SERVICE, FUNCTION, fc.GetFunctionAsyncInvokeConfigRequest(qualifier="LATEST")),
            404, "AsyncConfigNotExists")

    # A wrong secret changes nothing.
    refused(lambda: client("not-the-secret-0123456789").invoke_function_with_options(
        SERVICE, FUNCTION, fc.InvokeFunctionRequest(body=b"x"),
        fc.InvokeFunctionHeaders(x_fc_invocation_type="Async", x_fc_stateful_async_invocation_id="py-forged"),
        util.RuntimeOptions()), 403, "SignatureNotMatch")
    refused(lambda: fcc.get_stateful_async_invocation(SERVICE, FUNCTION, "py-forged", fc.GetStatefulAsyncInvocationRequest()),
            404, "StatefulAsyncInvocationNotFound")
    print("pyopen story: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception:  # the test prints what failed
        import traceback
        traceback.print_exc()
        sys.exit(1)
