//! Bearer-token authentication: who a caller is comes from its token, not from a header it
//! can set. With a token file, every RPC but health and reflection needs
//! `authorization: Bearer <token>`; the token's account becomes the call's `x-fc-account-id`,
//! and a different `x-fc-account-id` is refused. Tokens are compared in constant time and
//! never logged. The file is read again on SIGHUP (see `server`), without dropping
//! connections; a file that does not parse leaves the previous tokens in force.
//!
//! File format: one `TOKEN ACCOUNT` pair a line, separated by whitespace; blank lines and
//! lines starting with `#` are ignored. Tokens are 16 or more printable ASCII characters.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::model::validate;

use super::key_file::{self, Entries, KeyFile, KeyFileError};
use super::metadata::ACCOUNT_HEADER;
use super::ApiError;

/// Shortest token accepted in the file.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a call was refused by authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token, or one that is not known.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The token is valid but the call names another account.
    #[error("the token is for account {token_account}; {ACCOUNT_HEADER} names another account")]
    WrongAccount {
        /// The token's account.
        token_account: String,
    },
}

/// The tokens in force.
#[derive(Debug, Default)]
struct TokenSet {
    entries: Vec<(Vec<u8>, Arc<str>)>,
}

impl Entries for TokenSet {
    const WHAT: &'static str = "token file";

    fn parse(text: &str) -> Result<TokenSet, (usize, String)> {
        let mut entries: Vec<(Vec<u8>, Arc<str>)> = Vec::new();
        for (line, fields) in key_file::lines(text) {
            let [token, account] = fields[..] else {
                return Err((line, "expected `TOKEN ACCOUNT`".into()));
            };
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((
                    line,
                    format!(
                        "the token must be at least {MIN_TOKEN_LEN} printable ASCII characters"
                    ),
                ));
            }
            validate::account_id("account", account).map_err(|e| (line, e.to_string()))?;
            if entries
                .iter()
                .any(|(known, _)| known.as_slice() == token.as_bytes())
            {
                return Err((line, "the token is listed twice".into()));
            }
            entries.push((token.as_bytes().to_vec(), account.into()));
        }
        Ok(TokenSet { entries })
    }

    fn count(&self) -> usize {
        self.entries.len()
    }
}

impl TokenSet {
    /// The account of `presented`: every entry is compared, in constant time each, so the
    /// time taken does not depend on which entry (if any) matched or how much of it.
    fn account_of(&self, presented: &[u8]) -> Option<Arc<str>> {
        let mut found = None;
        for (token, account) in &self.entries {
            if constant_time_eq::constant_time_eq(token, presented) {
                found = Some(account.clone());
            }
        }
        found
    }
}

/// The token file and the tokens read from it.
#[derive(Debug)]
pub struct Tokens {
    file: KeyFile<TokenSet>,
}

impl Tokens {
    /// Read `path`.
    pub fn load(path: &Path) -> Result<Arc<Tokens>, KeyFileError> {
        Ok(Arc::new(Tokens {
            file: KeyFile::load(path)?,
        }))
    }

    /// Read the file again; on error the tokens in force stay. Returns how many are loaded.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        self.file.reload()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Check a request's headers: the account it acts for, or why it is refused.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Arc<str>, AuthError> {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::Unauthenticated(
                "authorization: Bearer <token> is required",
            ))?
            .as_bytes();
        let token = presented
            .strip_prefix(b"Bearer ")
            .ok_or(AuthError::Unauthenticated(
                "the authorization header must be `Bearer <token>`",
            ))?;
        let account = self
            .file
            .current()
            .account_of(token)
            .ok_or(AuthError::Unauthenticated("the bearer token is not known"))?;
        if let Some(claimed) = headers.get(ACCOUNT_HEADER) {
            if claimed.as_bytes() != account.as_bytes() {
                return Err(AuthError::WrongAccount {
                    token_account: account.to_string(),
                });
            }
        }
        Ok(account)
    }
}

/// Paths that stay open without a token: health checks and server reflection.
fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// Tower layer enforcing [`Tokens`]; without tokens it lets everything through.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    tokens: Option<Arc<Tokens>>,
}

impl AuthLayer {
    /// Enforce `tokens` (or nothing, for `None`).
    pub fn new(tokens: Option<Arc<Tokens>>) -> Self {
        AuthLayer { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<Tokens>>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let Some(tokens) = &self.tokens else {
            return Box::pin(self.inner.call(request));
        };
        if is_open(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match tokens.authenticate(request.headers()) {
            Ok(account) => {
                if let Ok(value) = HeaderValue::from_str(&account) {
                    request.headers_mut().insert(ACCOUNT_HEADER, value);
                }
                Box::pin(self.inner.call(request))
            }
            Err(refused) => {
                let status = tonic::Status::from(ApiError::from(refused));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TokenSet, KeyFileError> {
        TokenSet::parse(text).map_err(|(line, rule)| KeyFileError::Line {
            what: TokenSet::WHAT,
            path: "tokens".into(),
            line,
            rule,
        })
    }

    #[test]
    fn the_file_format_and_its_errors_never_show_a_token() {
        let set = parse("# comment\n\nsecret-token-for-a1  acct-a\nsecret-token-for-b2 acct-b\n")
            .expect("valid");
        assert_eq!(set.entries.len(), 2);
        assert_eq!(
            set.account_of(b"secret-token-for-b2").as_deref(),
            Some("acct-b")
        );
        assert_eq!(set.account_of(b"secret-token-for-b"), None);
        for bad in [
            "short acct",
            "only-one-field-here",
            "secret-token-for-a1 acct extra",
            "secret-token-for-a1 a\nsecret-token-for-a1 b",
            "secret-token-for-a1 bad/account",
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(!err.contains("secret-token"), "{err}");
            assert!(err.contains("line"), "{err}");
        }
    }
}
