//! Opaque page tokens: a keyset cursor (the last item a page examined) in URL-safe base64.
//!
//! A token is `kind|part|part...` encoded: the kind ties it to one list and sort order, the
//! parts are the cursor. Names and ids never contain `|`, so the parts split back exactly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::error::StoreError;

/// Token prefix for an invocation list in ascending order.
pub const KIND_INVOCATIONS_ASC: &str = "ia1";
/// Token prefix for an invocation list in descending order.
pub const KIND_INVOCATIONS_DESC: &str = "id1";
/// Token prefix for the functions list.
pub const KIND_FUNCTIONS: &str = "fn1";
/// Token prefix for a config list.
pub const KIND_CONFIGS: &str = "cf1";

/// Encode a cursor of `kind`.
pub fn encode(kind: &str, parts: &[&str]) -> String {
    let mut raw = String::from(kind);
    for part in parts {
        raw.push('|');
        raw.push_str(part);
    }
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decode a token of `kind` with `count` parts, or say why it is not one.
pub fn decode(
    field: &'static str,
    token: &str,
    kind: &str,
    count: usize,
) -> Result<Vec<String>, StoreError> {
    let invalid = |rule| StoreError::InvalidPageToken { field, rule };
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid("is not a token this server issued"))?;
    let raw = String::from_utf8(bytes).map_err(|_| invalid("is not a token this server issued"))?;
    let mut parts = raw.split('|');
    let token_kind = parts.next().unwrap_or_default();
    if token_kind != kind {
        let rule = match (token_kind, kind) {
            (KIND_INVOCATIONS_ASC, KIND_INVOCATIONS_DESC)
            | (KIND_INVOCATIONS_DESC, KIND_INVOCATIONS_ASC) => {
                "was issued for the other sort_order_by_time"
            }
            _ => "was not issued by this list",
        };
        return Err(invalid(rule));
    }
    let parts: Vec<String> = parts.map(str::to_string).collect();
    if parts.len() != count || parts.iter().any(String::is_empty) {
        return Err(invalid("is not a token this server issued"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_kinds_and_garbage() {
        let token = encode(KIND_INVOCATIONS_ASC, &["17", "job-1"]);
        assert_eq!(
            decode("next_token", &token, KIND_INVOCATIONS_ASC, 2).expect("round trip"),
            vec!["17".to_string(), "job-1".to_string()]
        );
        assert!(decode("next_token", &token, KIND_INVOCATIONS_DESC, 2).is_err());
        assert!(decode("next_token", &token, KIND_FUNCTIONS, 2).is_err());
        assert!(decode("next_token", &token, KIND_INVOCATIONS_ASC, 3).is_err());
        for garbage in ["", "!!!", "aGVsbG8", &encode(KIND_CONFIGS, &[""])] {
            assert!(
                decode("next_token", garbage, KIND_CONFIGS, 1).is_err(),
                "{garbage}"
            );
        }
    }
}
