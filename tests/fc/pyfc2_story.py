"""FC's Python SDK for the 2016-08-15 API (aliyun-fc2), unchanged but for the endpoint,
through what it has for async tasks: invoke with and without an id (task headers passed as
the SDK's users do) and the four config operations, FC-signed. Run by tests/fc_sdk.rs with
SAI_FC_ENDPOINT, SAI_AK, SAI_SK (see pyopen_story.py).
With SAI_FC_SKEWED=1 (the process clock moved by faketime) it checks that an invoke is
refused as too skewed."""
import os
import sys

import fc2

SERVICE, FUNCTION = "pysvc", "pyfc2"
ASYNC = {"x-fc-invocation-type": "Async"}


def client(secret=None):
    return fc2.Client(endpoint=f"http://{os.environ['SAI_FC_ENDPOINT']}",
                      accessKeyID=os.environ["SAI_AK"],
                      accessKeySecret=secret or os.environ["SAI_SK"])


def refused(call, status, code):
    try:
        call()
    except fc2.fc_exceptions.FcError as err:
        assert err.status_code == status, (err.status_code, err.message)
        assert err.err_code == code, (err.err_code, err.message)
        assert err.request_id, "the request id header"
        return err
    raise AssertionError(f"expected {code}")


def main():
    fcc = client()
    if os.environ.get("SAI_FC_SKEWED") == "1":
        refused(lambda: fcc.invoke_function(SERVICE, FUNCTION, payload=b"late", qualifier="LATEST",
                                            headers={**ASYNC, "x-fc-stateful-async-invocation-id": "fc2-skewed"}),
                403, "RequestTimeTooSkewed")
        print("pyfc2 skewed: ok")
        return

    put = fcc.put_function_async_invoke_config(SERVICE, "LATEST", FUNCTION, {
        "maxAsyncEventAgeInSeconds": 600, "maxAsyncRetryAttempts": 2, "statefulInvocation": True,
        "destinationConfig": {"onSuccess": {"destination": "acs:fc:::services/pysvc/functions/done"}},
    })
    assert put.data["maxAsyncRetryAttempts"] == 2, put.data
    assert put.data["service"] == SERVICE and put.data["qualifier"] == "LATEST", put.data
    got = fcc.get_function_async_invoke_config(SERVICE, "LATEST", FUNCTION)
    assert got.data["maxAsyncEventAgeInSeconds"] == 600
    assert got.data["destinationConfig"]["onSuccess"]["destination"].endswith("functions/done")
    listed = fcc.list_function_async_invoke_configs(SERVICE, FUNCTION, limit=5)
    assert [c["qualifier"] for c in listed.data["configs"]] == ["LATEST"], listed.data

    with_id = fcc.invoke_function(SERVICE, FUNCTION, payload=b'{"a":1}', qualifier="LATEST",
                                  headers={**ASYNC, "x-fc-stateful-async-invocation-id": "fc2-1"})
    assert with_id.headers["x-fc-stateful-async-invocation-id"] == "fc2-1", with_id.headers
    without = fcc.invoke_function(SERVICE, FUNCTION, payload=b"plain", headers=dict(ASYNC))
    assert without.headers["x-fc-stateful-async-invocation-id"], without.headers
    refused(lambda: fcc.invoke_function(SERVICE, FUNCTION, payload=b"again", qualifier="LATEST",
                                        headers={**ASYNC, "x-fc-stateful-async-invocation-id": "fc2-1"}),
            409, "StatefulAsyncInvocationAlreadyExists")
    refused(lambda: fcc.invoke_function(SERVICE, FUNCTION, payload=b"sync"), 400, "InvalidArgument")
    refused(lambda: client("wrong-secret-0123456789").invoke_function(
        SERVICE, FUNCTION, payload=b"forged", headers={**ASYNC, "x-fc-stateful-async-invocation-id": "fc2-forged"}),
        403, "SignatureNotMatch")

    fcc.delete_function_async_invoke_config(SERVICE, "LATEST", FUNCTION)
    refused(lambda: fcc.get_function_async_invoke_config(SERVICE, "LATEST", FUNCTION), 404, "AsyncConfigNotExists")
    print("pyfc2 story: ok")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        sys.exit(1)
