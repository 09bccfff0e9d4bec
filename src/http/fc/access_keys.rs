//! The access keys FC's REST API accepts (`--access-keys FILE`): one
//! `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT` a line, blank lines and `#` comments ignored. A
//! request signed with a key acts for the key's account. The file is read again on SIGHUP
//! (see `api::key_file`). Secrets are never logged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::api::key_file::{self, Entries, KeyFile, KeyFileError};
use crate::model::validate;

use super::signature::SecretLookup;

/// Shortest secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// Secret and account by access key id.
#[derive(Debug, Default)]
pub struct KeySet {
    by_id: HashMap<String, (Vec<u8>, String)>,
}

impl Entries for KeySet {
    const WHAT: &'static str = "access key file";

    fn parse(text: &str) -> Result<KeySet, (usize, String)> {
        let mut by_id = HashMap::new();
        for (line, fields) in key_file::lines(text) {
            let [id, secret, account] = fields[..] else {
                return Err((
                    line,
                    "expected `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT`".into(),
                ));
            };
            if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            {
                return Err((
                    line,
                    "the access key id must be letters, digits, '.', '-' or '_'".into(),
                ));
            }
            if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    line,
                    format!(
                        "the secret must be at least {MIN_SECRET_LEN} printable ASCII characters"
                    ),
                ));
            }
            validate::account_id("account", account).map_err(|e| (line, e.to_string()))?;
            let entry = (secret.as_bytes().to_vec(), account.to_string());
            if by_id.insert(id.to_string(), entry).is_some() {
                return Err((line, "the access key id is listed twice".into()));
            }
        }
        Ok(KeySet { by_id })
    }

    fn count(&self) -> usize {
        self.by_id.len()
    }
}

/// The access key file and the keys read from it.
pub type AccessKeys = KeyFile<KeySet>;

/// Read the access key file at `path`.
pub fn load(path: &Path) -> Result<Arc<AccessKeys>, KeyFileError> {
    KeyFile::load(path).map(Arc::new)
}

impl SecretLookup for AccessKeys {
    fn secret_of(&self, access_key_id: &str) -> Option<(Vec<u8>, String)> {
        self.current().by_id.get(access_key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_and_named() {
        let ok = KeySet::parse("# team a\nAKID1 0123456789abcdefXYZ team-a\n\n").expect("valid");
        assert_eq!(ok.by_id["AKID1"].1, "team-a");
        for (text, rule) in [
            ("AKID1 0123456789abcdef", "expected"),
            ("AKID1 short team-a", "at least 16"),
            ("AK/1 0123456789abcdefXYZ team-a", "letters, digits"),
            (
                "AKID1 0123456789abcdefXYZ team-a\nAKID1 0123456789abcdefXYZ team-b",
                "twice",
            ),
            ("AKID1 0123456789abcdefXYZ bad!account", "account"),
        ] {
            let (_, err) = KeySet::parse(text).expect_err(text);
            assert!(err.contains(rule), "{text}: {err}");
            assert!(
                !err.contains("0123456789abcdef"),
                "a secret in an error: {err}"
            );
        }
    }
}
