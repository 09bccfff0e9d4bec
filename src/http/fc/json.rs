//! The lenient reading of a put config body, as the SDKs send it (camelCase or PascalCase keys,
//! `null` as unset, unknown keys ignored), each field's type checked and named when wrong. The
//! answers' shapes are `api::fc_json`.

use serde_json::{Map, Value};

use crate::model::validate::ValidationError;
use crate::pb;

/// The value of `key` (camelCase) or its PascalCase spelling; `null` reads as absent.
fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let pascal: String = key
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(key.chars().skip(1))
        .collect();
    object
        .get(key)
        .or_else(|| object.get(&pascal))
        .filter(|value| !value.is_null())
}

fn object<'a>(value: &'a Value, name: &str) -> Result<&'a Map<String, Value>, ValidationError> {
    value
        .as_object()
        .ok_or_else(|| ValidationError::new(name, "must be a JSON object"))
}

fn integer(object: &Map<String, Value>, key: &str) -> Result<Option<i64>, ValidationError> {
    field(object, key)
        .map(|value| {
            value
                .as_i64()
                .ok_or_else(|| ValidationError::new(key, "must be an integer"))
        })
        .transpose()
}

/// A put config body as the config it asks for; the server checks the ranges.
pub fn config_from_body(body: &[u8]) -> Result<pb::AsyncInvokeConfig, ValidationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ValidationError::new("body", &format!("must be a JSON object ({err})")))?;
    let body = object(&value, "body")?;
    let destination = |parent: &Map<String, Value>, key: &str| {
        field(parent, key)
            .map(|value| {
                let name = format!("destinationConfig.{key}");
                let target = object(value, &name)?;
                let arn = field(target, "destination")
                    .map(|arn| {
                        arn.as_str().map(str::to_string).ok_or_else(|| {
                            ValidationError::new(&format!("{name}.destination"), "must be a string")
                        })
                    })
                    .transpose()?
                    .unwrap_or_default();
                Ok(pb::Destination { destination: arn })
            })
            .transpose()
    };
    let destination_config = field(body, "destinationConfig")
        .map(|value| {
            let config = object(value, "destinationConfig")?;
            Ok::<_, ValidationError>(pb::DestinationConfig {
                on_success: destination(config, "onSuccess")?,
                on_failure: destination(config, "onFailure")?,
            })
        })
        .transpose()?;
    let stateful_invocation = field(body, "statefulInvocation")
        .map(|value| {
            value
                .as_bool()
                .ok_or_else(|| ValidationError::new("statefulInvocation", "must be true or false"))
        })
        .transpose()?;
    Ok(pb::AsyncInvokeConfig {
        max_async_event_age_in_seconds: integer(body, "maxAsyncEventAgeInSeconds")?,
        max_async_retry_attempts: integer(body, "maxAsyncRetryAttempts")?,
        destination_config,
        stateful_invocation,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bodies_are_read_in_every_spelling_the_sdks_send() {
        let camel = br#"{"destinationConfig":{"onSuccess":{"destination":"acs:fc:::services/s/functions/f"}},"maxAsyncEventAgeInSeconds":3600,"maxAsyncRetryAttempts":2,"statefulInvocation":true}"#;
        let config = config_from_body(camel).expect("camelCase");
        assert_eq!(config.max_async_event_age_in_seconds, Some(3600));
        assert_eq!(config.max_async_retry_attempts, Some(2));
        assert_eq!(config.stateful_invocation, Some(true));
        let on_success = config
            .destination_config
            .and_then(|d| d.on_success)
            .expect("onSuccess");
        assert_eq!(on_success.destination, "acs:fc:::services/s/functions/f");

        let go = br#"{"destinationConfig":null,"maxAsyncEventAgeInSeconds":null,"maxAsyncRetryAttempts":1,"statefulInvocation":null,"extra":7}"#;
        let config = config_from_body(go).expect("nulls and unknown keys");
        assert_eq!(config.max_async_retry_attempts, Some(1));
        assert_eq!(config.max_async_event_age_in_seconds, None);
        assert!(config.destination_config.is_none());

        let pascal = br#"{"MaxAsyncRetryAttempts": 0, "StatefulInvocation": false}"#;
        let config = config_from_body(pascal).expect("PascalCase");
        assert_eq!(config.max_async_retry_attempts, Some(0));
        assert_eq!(config.stateful_invocation, Some(false));
    }

    #[test]
    fn wrong_types_name_their_field() {
        for (body, field) in [
            (
                &br#"{"maxAsyncRetryAttempts":"2"}"#[..],
                "maxAsyncRetryAttempts",
            ),
            (br#"{"statefulInvocation":"yes"}"#, "statefulInvocation"),
            (br#"{"destinationConfig":[]}"#, "destinationConfig"),
            (
                br#"{"destinationConfig":{"onFailure":{"destination":5}}}"#,
                "destinationConfig.onFailure.destination",
            ),
            (br#"[1,2]"#, "body"),
            (br#"{"#, "body"),
        ] {
            let err = config_from_body(body).expect_err("refused").to_string();
            assert!(err.contains(field), "{err}");
        }
    }
}
