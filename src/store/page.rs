//! Opaque, authenticated page tokens: a keyset cursor (the last item a page examined), bound
//! to the list it came from, signed with the server's key.
//!
//! A token is URL-safe base64 of `kind|part|part...` followed by a 16-byte HMAC-SHA256 tag
//! over the list's scope (account, and function where the list has one) and those bytes. The
//! kind ties it to one list and sort order, the parts are the cursor. A token that was
//! altered, forged, or issued for another account's or function's list fails the tag and is
//! INVALID_ARGUMENT. Names and ids never contain `|`, so the parts split back exactly. The
//! key is kept in the data directory, so tokens survive a restart; in memory, it is random
//! per process.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::error::StoreError;

/// Token prefix for an invocation list in ascending order.
pub const KIND_INVOCATIONS_ASC: &str = "ia1";
/// Token prefix for an invocation list in descending order.
pub const KIND_INVOCATIONS_DESC: &str = "id1";
/// Token prefix for the functions list.
pub const KIND_FUNCTIONS: &str = "fn1";
/// Token prefix for a config list.
pub const KIND_CONFIGS: &str = "cf1";

/// Bytes of tag kept at the end of a token.
const TAG_BYTES: usize = 16;

/// Bytes of a signing key.
pub const KEY_BYTES: usize = 32;

/// Signs and checks page tokens with one key.
#[derive(Clone)]
pub struct PageSigner {
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for PageSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageSigner { key: <hidden> }")
    }
}

impl PageSigner {
    /// A signer with `key`.
    pub fn new(key: [u8; KEY_BYTES]) -> Self {
        PageSigner { key }
    }

    /// A signer with a fresh random key (tokens die with the process).
    pub fn random() -> Self {
        PageSigner::new(rand::random())
    }

    fn tag(&self, scope: &[&str], raw: &[u8]) -> [u8; TAG_BYTES] {
        // Any key length is valid for HMAC, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; TAG_BYTES];
        };
        for part in scope {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.update(raw);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Encode a cursor of `kind` for the list identified by `scope`.
    pub fn encode(&self, kind: &str, scope: &[&str], parts: &[&str]) -> String {
        let mut raw = String::from(kind);
        for part in parts {
            raw.push('|');
            raw.push_str(part);
        }
        let mut bytes = raw.into_bytes();
        let tag = self.tag(scope, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Decode a token of `kind` with `count` parts for the list identified by `scope`, or say
    /// why it is not one.
    pub fn decode(
        &self,
        field: &'static str,
        token: &str,
        kind: &str,
        scope: &[&str],
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let invalid = |rule| StoreError::InvalidPageToken { field, rule };
        let not_ours = || invalid("is not a token this server issued for this list");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| not_ours())?;
        let split = bytes.len().checked_sub(TAG_BYTES).ok_or_else(not_ours)?;
        let (raw, tag) = bytes.split_at(split);
        let expected = self.tag(scope, raw);
        if !constant_time_eq::constant_time_eq(tag, &expected) {
            return Err(not_ours());
        }
        let raw = std::str::from_utf8(raw).map_err(|_| not_ours())?;
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
            return Err(not_ours());
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_kinds_scopes_keys_and_garbage() {
        let signer = PageSigner::random();
        let scope = ["acct", "svc", "fn"];
        let token = signer.encode(KIND_INVOCATIONS_ASC, &scope, &["17", "job-1"]);
        assert_eq!(
            signer
                .decode("next_token", &token, KIND_INVOCATIONS_ASC, &scope, 2)
                .expect("round trip"),
            vec!["17".to_string(), "job-1".to_string()]
        );
        assert!(signer
            .decode("next_token", &token, KIND_INVOCATIONS_DESC, &scope, 2)
            .is_err());
        assert!(signer
            .decode("next_token", &token, KIND_FUNCTIONS, &scope, 2)
            .is_err());
        assert!(signer
            .decode("next_token", &token, KIND_INVOCATIONS_ASC, &scope, 3)
            .is_err());
        // Another account's list, or another server's key.
        assert!(signer
            .decode(
                "next_token",
                &token,
                KIND_INVOCATIONS_ASC,
                &["other", "svc", "fn"],
                2
            )
            .is_err());
        assert!(PageSigner::random()
            .decode("next_token", &token, KIND_INVOCATIONS_ASC, &scope, 2)
            .is_err());
        // Any altered byte breaks the tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        bytes[4] ^= 1;
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        assert!(signer
            .decode("next_token", &altered, KIND_INVOCATIONS_ASC, &scope, 2)
            .is_err());
        let unsigned = URL_SAFE_NO_PAD.encode("ia1|17|job-1");
        for garbage in ["", "!!!", "aGVsbG8", unsigned.as_str()] {
            assert!(
                signer
                    .decode("next_token", garbage, KIND_INVOCATIONS_ASC, &scope, 2)
                    .is_err(),
                "{garbage}"
            );
        }
    }
}
