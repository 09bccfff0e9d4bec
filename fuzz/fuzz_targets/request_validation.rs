//! Arbitrary bytes as protobuf requests of every kind, through the same validation and
//! conversion the services run. Nothing may panic; whatever is accepted must hold the rules.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sai::internals::convert;
use sai::model::validate;
use sai::pb;

fuzz_target!(|data: &[u8]| {
    let account: Arc<str> = "fuzz-account".into();
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Ok(request) = pb::InvokeFunctionRequest::decode(bytes) {
                let max = validate::MAX_PAYLOAD_BYTES;
                if let Ok(new) = convert::new_invocation(&account, "req", request, max) {
                    assert!(validate::existing_invocation_id("id", &new.key.id).is_ok());
                    assert!(new.payload.len() <= validate::MAX_PAYLOAD_BYTES);
                }
            }
        }
        1 => {
            if let Ok(request) = pb::ListStatefulAsyncInvocationsRequest::decode(bytes) {
                if let Ok(query) = convert::list_query(&account, request) {
                    assert!(query.limit >= 1 && query.limit <= 100);
                }
            }
        }
        2 => {
            if let Ok(request) = pb::PutFunctionAsyncInvokeConfigRequest::decode(bytes) {
                let _ = convert::config_key(
                    &account,
                    &request.service_name,
                    &request.function_name,
                    &request.qualifier,
                );
                let _ = convert::config_from_pb(&account, request.config);
            }
        }
        3 => {
            if let Ok(request) = pb::PollInvocationsRequest::decode(bytes) {
                let _ = convert::poll_request(&account, request);
            }
        }
        4 => {
            if let Ok(request) = pb::CompleteInvocationRequest::decode(bytes) {
                let _ = convert::lease_token(&request.lease_token);
                let _ = convert::outcome(request.outcome, validate::MAX_RETURN_PAYLOAD_BYTES);
            }
        }
        _ => {
            if let Ok(request) = pb::WatchInvocationRequest::decode(bytes) {
                let _ = convert::non_negative("from_event_id", request.from_event_id);
                let _ =
                    convert::function_key(&account, &request.service_name, &request.function_name);
            }
        }
    }
});
