//! Lease tokens: a token names the attempt it covers (the invocation's key and the attempt
//! number) and carries a tag, an HMAC-SHA256 of those under a secret key: a token cannot be
//! forged or altered, and whoever holds the key can tell which attempt any token is for
//! without remembering it. The embedded backend draws its key when the process starts (its
//! leases die with it); replicas on a shared database share one key stored there, so that a
//! lease granted by one is verified by any other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{FunctionKey, InvocationKey};

/// Token prefix: the version of the token's layout.
const TOKEN_PREFIX: &str = "lt2.";
/// Bytes of tag a token carries.
const TAG_BYTES: usize = 16;

/// Makes and verifies lease tokens under one key.
#[derive(Clone)]
pub struct LeaseSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for LeaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseSigner")
    }
}

impl LeaseSigner {
    /// Tokens under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        LeaseSigner { key }
    }

    /// Tokens under a key drawn now.
    pub fn random() -> Self {
        LeaseSigner {
            key: rand::random(),
        }
    }

    /// The token of attempt `attempt` of `key`.
    pub fn token(&self, key: &InvocationKey, attempt: u32) -> String {
        let mut raw = attempt.to_be_bytes().to_vec();
        for part in [
            &key.function.account,
            &key.function.service,
            &key.function.function,
        ] {
            // Names are validated to far below 64 KiB.
            let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(&part.as_bytes()[..usize::from(len)]);
        }
        raw.extend_from_slice(key.id.as_bytes());
        let tag = self.tag(&raw);
        let mut bytes = tag.to_vec();
        bytes.extend_from_slice(&raw);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn tag(&self, raw: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(raw);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The attempt `token` covers, if it was made under this key for an invocation of `account`. A
    /// foreign token is as unknown as a forged one, so that tokens reveal nothing across
    /// accounts.
    pub fn verify(&self, token: &str, account: &str) -> Option<(InvocationKey, u32)> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.strip_prefix(TOKEN_PREFIX)?)
            .ok()?;
        if bytes.len() < TAG_BYTES + 4 {
            return None;
        }
        let (tag, raw) = bytes.split_at(TAG_BYTES);
        if !constant_time_eq::constant_time_eq(tag, &self.tag(raw)) {
            return None;
        }
        let attempt = u32::from_be_bytes(raw[..4].try_into().ok()?);
        let mut rest = &raw[4..];
        let mut parts = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            parts.push(std::str::from_utf8(rest.get(2..2 + len)?).ok()?);
            rest = &rest[2 + len..];
        }
        if parts[0] != account {
            return None;
        }
        let id = std::str::from_utf8(rest).ok()?;
        Some((
            FunctionKey::new(parts[0], parts[1], parts[2]).invocation(id),
            attempt,
        ))
    }
}
