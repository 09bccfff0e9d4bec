//! The access keys FC's REST API accepts (`--access-keys FILE`): one
//! `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT` a line, blank lines and `#` comments ignored. A
//! request signed with a key acts for the key's account. The file is read again on SIGHUP;
//! a file that does not parse leaves the keys in force. Secrets are never logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::model::validate;

use super::signature::SecretLookup;

/// Why an access key file could not be used. Never includes a secret.
#[derive(Debug, thiserror::Error)]
pub enum AccessKeyFileError {
    /// The file could not be read.
    #[error("cannot read access key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a valid `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT` triple.
    #[error("access key file {path} line {line}: {rule}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        rule: String,
    },
}

/// Shortest secret accepted.
const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Default)]
struct KeySet {
    by_id: HashMap<String, (Vec<u8>, String)>,
}

impl KeySet {
    fn parse(path: &Path, text: &str) -> Result<KeySet, AccessKeyFileError> {
        let mut by_id = HashMap::new();
        for (at, line) in text.lines().enumerate() {
            let line_error = |rule: String| AccessKeyFileError::Line {
                path: path.to_path_buf(),
                line: at + 1,
                rule,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(id), Some(secret), Some(account), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(line_error(
                    "expected `ACCESS_KEY_ID ACCESS_KEY_SECRET ACCOUNT`".into(),
                ));
            };
            if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            {
                return Err(line_error(
                    "the access key id must be letters, digits, '.', '-' or '_'".into(),
                ));
            }
            if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(line_error(format!(
                    "the secret must be at least {MIN_SECRET_LEN} printable ASCII characters"
                )));
            }
            validate::account_id("account", account).map_err(|e| line_error(e.to_string()))?;
            if by_id
                .insert(
                    id.to_string(),
                    (secret.as_bytes().to_vec(), account.to_string()),
                )
                .is_some()
            {
                return Err(line_error("the access key id is listed twice".into()));
            }
        }
        Ok(KeySet { by_id })
    }
}

/// The access key file and the keys read from it.
#[derive(Debug)]
pub struct AccessKeys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
}

impl AccessKeys {
    /// Read `path`.
    pub fn load(path: &Path) -> Result<Arc<AccessKeys>, AccessKeyFileError> {
        let keys = AccessKeys {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::default()),
        };
        keys.reload()?;
        Ok(Arc::new(keys))
    }

    /// Read the file again; on error the keys in force stay. Returns how many are loaded.
    pub fn reload(&self) -> Result<usize, AccessKeyFileError> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|source| AccessKeyFileError::Read {
                path: self.path.clone(),
                source,
            })?;
        let set = KeySet::parse(&self.path, &text)?;
        let count = set.by_id.len();
        *self.current.write() = Arc::new(set);
        Ok(count)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SecretLookup for AccessKeys {
    fn secret_of(&self, access_key_id: &str) -> Option<(Vec<u8>, String)> {
        self.current.read().by_id.get(access_key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_and_named() {
        let path = Path::new("keys");
        let ok =
            KeySet::parse(path, "# team a\nAKID1 0123456789abcdefXYZ team-a\n\n").expect("valid");
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
            let err = KeySet::parse(path, text).expect_err(text).to_string();
            assert!(err.contains(rule), "{text}: {err}");
            assert!(
                !err.contains("0123456789abcdef"),
                "a secret in an error: {err}"
            );
        }
    }
}
