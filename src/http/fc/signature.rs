//! FC's two request signatures, checked from the request as received (method, raw path and
//! query, headers, body): ACS3-HMAC-SHA256, which the 2021-04-06 SDKs use, and FC's own
//! `FC AccessKeyId:Signature` (HMAC-SHA256 over method, Content-MD5, Content-Type, Date, the
//! `x-fc-*` headers and the path), which the 2016-08-15 SDKs use. Pure: the caller gives the
//! secret lookup and the time.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's date may be from the server's clock: FC's documented limit.
pub const MAX_SKEW_MS: i64 = 15 * 60 * 1_000;

/// What RFC 3986 leaves unescaped: letters, digits, `-`, `_`, `.`, `~`.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request as it arrived, the parts a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as received, still percent-encoded.
    pub raw_path: &'a str,
    /// The query as received (without `?`), if any.
    pub raw_query: Option<&'a str>,
    /// The headers.
    pub headers: &'a http::HeaderMap,
    /// The body.
    pub body: &'a [u8],
}

/// Why a request's signature was not accepted. Never includes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Authorization` header.
    #[error("the Authorization header is required (ACS3-HMAC-SHA256 or FC signature)")]
    Missing,
    /// An `Authorization` header this server cannot read.
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    /// The access key id is not in the access key file.
    #[error("the access key id {0} is not known")]
    UnknownAccessKey(String),
    /// The signature does not match the request: a wrong secret, or a request changed on
    /// the way.
    #[error("the request signature does not match the signature the server calculated")]
    Mismatch,
    /// The body is not the one its signed digest header (`x-acs-content-sha256`,
    /// `Content-MD5`) names.
    #[error("the body does not match {0}")]
    BodyHash(&'static str),
    /// The date header the scheme signs is missing or unreadable.
    #[error("{0} is missing or not a valid date")]
    Date(&'static str),
    /// The request's date is too far from the server's clock.
    #[error("{header} is {skew_s} s away from the server's time; at most 900 s are allowed")]
    Skewed {
        /// The header.
        header: &'static str,
        /// How far, in seconds.
        skew_s: i64,
    },
}

/// The access key that signed a request, and what it maps to.
pub trait SecretLookup {
    /// The secret and account of `access_key_id`, if known.
    fn secret_of(&self, access_key_id: &str) -> Option<(Vec<u8>, String)>;
}

/// Check `request`'s signature with the secrets `keys` holds, at `now_ms`; the account of
/// the access key that signed it.
pub fn verify(
    request: &ReceivedRequest<'_>,
    keys: &impl SecretLookup,
    now_ms: i64,
) -> Result<String, SignatureError> {
    let authorization = request
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or(SignatureError::Missing)?
        .to_str()
        .map_err(|_| SignatureError::Malformed("not printable ASCII"))?;
    if let Some(fields) = authorization.strip_prefix("ACS3-HMAC-SHA256 ") {
        verify_acs3(request, fields, keys, now_ms)
    } else if let Some(credential) = authorization.strip_prefix("FC ") {
        verify_fc(request, credential, keys, now_ms)
    } else {
        Err(SignatureError::Malformed(
            "the scheme must be ACS3-HMAC-SHA256 or FC",
        ))
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn check_skew(header: &'static str, signed_ms: i64, now_ms: i64) -> Result<(), SignatureError> {
    let skew = (now_ms - signed_ms).abs();
    if skew > MAX_SKEW_MS {
        return Err(SignatureError::Skewed {
            header,
            skew_s: skew / 1_000,
        });
    }
    Ok(())
}

fn epoch_ms(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    constant_time_eq::constant_time_eq(a, b)
}

fn verify_acs3(
    request: &ReceivedRequest<'_>,
    fields: &str,
    keys: &impl SecretLookup,
    now_ms: i64,
) -> Result<String, SignatureError> {
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", value)) => credential = Some(value),
            Some(("SignedHeaders", value)) => signed_headers = Some(value),
            Some(("Signature", value)) => signature = Some(value),
            _ => {
                return Err(SignatureError::Malformed(
                    "unknown field in ACS3 credentials",
                ))
            }
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(SignatureError::Malformed(
            "ACS3 needs Credential, SignedHeaders and Signature",
        ));
    };
    let (secret, account) = keys
        .secret_of(credential)
        .ok_or_else(|| SignatureError::UnknownAccessKey(credential.to_string()))?;
    let signed: Vec<&str> = signed_headers.split(';').collect();
    // The date and the body hash count only if they are signed.
    for required in ["x-acs-date", "x-acs-content-sha256", "host"] {
        if !signed.contains(&required) {
            return Err(SignatureError::Malformed(
                "SignedHeaders must include host, x-acs-date and x-acs-content-sha256",
            ));
        }
    }
    let date = header(request.headers, "x-acs-date").ok_or(SignatureError::Date("x-acs-date"))?;
    let signed_at =
        humantime::parse_rfc3339(date).map_err(|_| SignatureError::Date("x-acs-date"))?;
    check_skew("x-acs-date", epoch_ms(signed_at), now_ms)?;
    let body_hash = hex(&Sha256::digest(request.body));
    let claimed_hash = header(request.headers, "x-acs-content-sha256")
        .ok_or(SignatureError::BodyHash("x-acs-content-sha256"))?
        .to_ascii_lowercase();
    if !same(body_hash.as_bytes(), claimed_hash.as_bytes()) {
        return Err(SignatureError::BodyHash("x-acs-content-sha256"));
    }
    let canonical = acs3_canonical_request(request, &signed, signed_headers, &body_hash)?;
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let expected = hex(&hmac_sha256(&secret, to_sign.as_bytes()));
    if !same(
        expected.as_bytes(),
        signature.to_ascii_lowercase().as_bytes(),
    ) {
        return Err(SignatureError::Mismatch);
    }
    Ok(account)
}

/// The canonical request ACS3 signs: method, path as received, the query rebuilt from its
/// decoded pairs, the signed headers, their names, and the body's hash.
fn acs3_canonical_request(
    request: &ReceivedRequest<'_>,
    signed: &[&str],
    signed_headers: &str,
    body_hash: &str,
) -> Result<String, SignatureError> {
    let path = if request.raw_path.is_empty() {
        "/"
    } else {
        request.raw_path
    };
    let mut canonical = format!(
        "{}\n{path}\n{}\n",
        request.method,
        canonical_query(request.raw_query)
    );
    for name in signed {
        let mut values: Vec<&str> = request
            .headers
            .get_all(*name)
            .iter()
            .map(|value| {
                value
                    .to_str()
                    .map(str::trim)
                    .map_err(|_| SignatureError::Malformed("a signed header is not ASCII"))
            })
            .collect::<Result<_, _>>()?;
        if values.is_empty() {
            return Err(SignatureError::Malformed("a signed header is missing"));
        }
        values.sort_unstable();
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(signed_headers);
    canonical.push('\n');
    canonical.push_str(body_hash);
    Ok(canonical)
}

/// Percent-decode `text`, reading `+` as a space (the SDKs encode spaces either way).
fn decode_query_part(text: &str) -> String {
    percent_decode_str(&text.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn canonical_query(raw_query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                utf8_percent_encode(&decode_query_part(key), RFC3986).to_string(),
                utf8_percent_encode(&decode_query_part(value), RFC3986).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn verify_fc(
    request: &ReceivedRequest<'_>,
    credential: &str,
    keys: &impl SecretLookup,
    now_ms: i64,
) -> Result<String, SignatureError> {
    let (access_key_id, signature) = credential
        .trim()
        .split_once(':')
        .ok_or(SignatureError::Malformed("FC needs AccessKeyId:Signature"))?;
    let (secret, account) = keys
        .secret_of(access_key_id)
        .ok_or_else(|| SignatureError::UnknownAccessKey(access_key_id.to_string()))?;
    let date = header(request.headers, "date").ok_or(SignatureError::Date("Date"))?;
    let signed_at = httpdate::parse_http_date(date).map_err(|_| SignatureError::Date("Date"))?;
    check_skew("Date", epoch_ms(signed_at), now_ms)?;
    check_content_md5(request)?;
    let to_sign = fc_string_to_sign(request)?;
    let expected = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        hmac_sha256(&secret, to_sign.as_bytes()),
    );
    if !same(expected.as_bytes(), signature.as_bytes()) {
        return Err(SignatureError::Mismatch);
    }
    Ok(account)
}

/// FC's scheme signs `Content-MD5` but not the body, so a body must match the digest it
/// came with. The SDKs write it three ways: base64 of the digest (RFC 1864), hex (Go), and
/// base64 of the hex (Node).
fn check_content_md5(request: &ReceivedRequest<'_>) -> Result<(), SignatureError> {
    use base64::Engine as _;
    let Some(claimed) = header(request.headers, "content-md5") else {
        return Ok(());
    };
    let digest = md5::Md5::digest(request.body);
    let hex_digest = hex(&digest);
    let base64 = base64::engine::general_purpose::STANDARD;
    let matches = claimed == base64.encode(digest)
        || claimed.eq_ignore_ascii_case(&hex_digest)
        || claimed == base64.encode(hex_digest.as_bytes());
    if !matches {
        return Err(SignatureError::BodyHash("Content-MD5"));
    }
    Ok(())
}

/// What FC's own scheme signs: method, Content-MD5 and Content-Type as sent, Date, every
/// `x-fc-*` header sorted by name, and the decoded path (API calls sign no query).
fn fc_string_to_sign(request: &ReceivedRequest<'_>) -> Result<String, SignatureError> {
    let headers = request.headers;
    let mut fc_headers: Vec<(String, &str)> = Vec::new();
    for (name, value) in headers {
        if name.as_str().starts_with("x-fc-") {
            let value = value
                .to_str()
                .map_err(|_| SignatureError::Malformed("an x-fc- header is not ASCII"))?;
            fc_headers.push((name.as_str().to_string(), value.trim()));
        }
    }
    fc_headers.sort();
    let mut to_sign = format!(
        "{}\n{}\n{}\n{}\n",
        request.method,
        header(headers, "content-md5").unwrap_or(""),
        header(headers, "content-type").unwrap_or(""),
        header(headers, "date").unwrap_or(""),
    );
    for (name, value) in fc_headers {
        to_sign.push_str(&name);
        to_sign.push(':');
        to_sign.push_str(value);
        to_sign.push('\n');
    }
    to_sign.push_str(&percent_decode_str(request.raw_path).decode_utf8_lossy());
    Ok(to_sign)
}

#[cfg(test)]
mod tests {
    //! Vectors made by the SDKs' own signing code: AccessKey `testAccessKeyId`, secret
    //! `testAccessKeySecret`.
    use super::*;

    struct TestKey;

    impl SecretLookup for TestKey {
        fn secret_of(&self, id: &str) -> Option<(Vec<u8>, String)> {
            (id == "testAccessKeyId").then(|| (b"testAccessKeySecret".to_vec(), "acct".into()))
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        map
    }

    fn ms(rfc3339: &str) -> i64 {
        epoch_ms(humantime::parse_rfc3339(rfc3339).expect("date"))
    }

    const SIGNED_V1: &str = "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version;x-fc-invocation-type;x-fc-stateful-async-invocation-id";

    fn python_invoke(signature: &str) -> http::HeaderMap {
        headers(&[
            ("accept", "application/json"),
            ("host", "127.0.0.1:9000"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-action", "InvokeFunction"),
            ("x-acs-content-sha256", "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"),
            ("x-acs-credentials-provider", "static_ak"),
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-version", "2021-04-06"),
            ("x-fc-invocation-type", "Async"),
            ("x-fc-stateful-async-invocation-id", "job-1"),
            (
                "authorization",
                &format!("ACS3-HMAC-SHA256 Credential=testAccessKeyId,SignedHeaders={SIGNED_V1},Signature={signature}"),
            ),
        ])
    }

    const V1_SIGNATURE: &str = "26ac9bfac545f06d1e2949959bdf39e3e3c7925310e40a9e378bdd551362f22d";

    fn invoke_request<'a>(headers: &'a http::HeaderMap, body: &'a [u8]) -> ReceivedRequest<'a> {
        ReceivedRequest {
            method: "POST",
            raw_path: "/2021-04-06/services/svc/functions/fn/invocations",
            raw_query: Some("qualifier=LATEST"),
            headers,
            body,
        }
    }

    #[test]
    fn acs3_from_the_python_sdk_verifies_and_names_the_account() {
        let headers = python_invoke(V1_SIGNATURE);
        let request = invoke_request(&headers, b"{\"a\":1}");
        let now = ms("2024-01-01T00:05:00Z");
        assert_eq!(verify(&request, &TestKey, now), Ok("acct".into()));
    }

    #[test]
    fn acs3_refuses_a_changed_body_a_wrong_signature_an_unknown_key_and_a_stale_date() {
        let now = ms("2024-01-01T00:05:00Z");
        let headers = python_invoke(V1_SIGNATURE);
        let changed = invoke_request(&headers, b"{\"a\":2}");
        assert_eq!(
            verify(&changed, &TestKey, now),
            Err(SignatureError::BodyHash("x-acs-content-sha256"))
        );

        let forged = python_invoke(&V1_SIGNATURE.replace('2', "3"));
        let request = invoke_request(&forged, b"{\"a\":1}");
        assert_eq!(
            verify(&request, &TestKey, now),
            Err(SignatureError::Mismatch)
        );

        let mut other_query = invoke_request(&headers, b"{\"a\":1}");
        other_query.raw_query = Some("qualifier=prod");
        assert_eq!(
            verify(&other_query, &TestKey, now),
            Err(SignatureError::Mismatch)
        );

        let unknown = headers_with_credential(&headers, "otherKey");
        let request = invoke_request(&unknown, b"{\"a\":1}");
        assert_eq!(
            verify(&request, &TestKey, now),
            Err(SignatureError::UnknownAccessKey("otherKey".into()))
        );

        let late = ms("2024-01-01T00:16:00Z");
        let request = invoke_request(&headers, b"{\"a\":1}");
        assert!(matches!(
            verify(&request, &TestKey, late),
            Err(SignatureError::Skewed { skew_s: 960, .. })
        ));
    }

    fn headers_with_credential(original: &http::HeaderMap, key: &str) -> http::HeaderMap {
        let mut copy = original.clone();
        let authorization = original["authorization"]
            .to_str()
            .expect("ascii")
            .replace("testAccessKeyId", key);
        copy.insert("authorization", authorization.parse().expect("value"));
        copy
    }

    #[test]
    fn acs3_rebuilds_the_query_from_decoded_pairs() {
        // The same query as three SDKs encode it.
        let canonical = "includePayload=True&limit=10&nextToken=tok%201%2F%2B%3D&status=Running";
        for raw in [
            "includePayload=True&limit=10&nextToken=tok+1%2F%2B%3D&status=Running",
            "status=Running&nextToken=tok%201%2F%2B%3D&limit=10&includePayload=True",
            "includePayload=True&limit=10&nextToken=tok%201/%2B%3D&status=Running",
        ] {
            assert_eq!(canonical_query(Some(raw)), canonical, "{raw}");
        }
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("a=&b")), "a=&b=");
    }

    #[test]
    fn acs3_list_with_an_awkward_query_verifies() {
        let signed = "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version";
        let headers = headers(&[
            ("accept", "application/json"),
            ("host", "127.0.0.1:9000"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-action", "ListStatefulAsyncInvocations"),
            ("x-acs-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("x-acs-credentials-provider", "static_ak"),
            ("x-acs-date", "2024-01-01T00:00:00Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-version", "2021-04-06"),
            (
                "authorization",
                &format!("ACS3-HMAC-SHA256 Credential=testAccessKeyId,SignedHeaders={signed},Signature=199b18c0742641db92a6649dfa7f1d79087fb5525204a6f54b555eb4b16990c5"),
            ),
        ]);
        let request = ReceivedRequest {
            method: "GET",
            raw_path: "/2021-04-06/services/svc/functions/fn/stateful-async-invocations",
            raw_query: Some("includePayload=True&limit=10&nextToken=tok+1%2F%2B%3D&status=Running"),
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            verify(&request, &TestKey, ms("2024-01-01T00:00:00Z")),
            Ok("acct".into())
        );
    }

    fn fc2_invoke(signature: &str) -> http::HeaderMap {
        headers(&[
            ("content-type", "application/json"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("x-fc-account-id", "1234567890"),
            ("x-fc-invocation-type", "Async"),
            ("x-fc-stateful-async-invocation-id", "job-1"),
            ("authorization", &format!("FC testAccessKeyId:{signature}")),
        ])
    }

    fn fc2_request(headers: &http::HeaderMap) -> ReceivedRequest<'_> {
        ReceivedRequest {
            method: "POST",
            raw_path: "/2016-08-15/services/svc.LATEST/functions/fn/invocations",
            raw_query: None,
            headers,
            body: b"{\"a\":1}",
        }
    }

    #[test]
    fn fc_scheme_from_the_python_sdk_verifies_and_refuses_changes() {
        let now = ms("2024-01-01T00:10:00Z");
        let signature = "gGAzzJCV8iozBh/By2VPpT2zXT8mPL3Z5PX7geJ7ONo=";
        let headers = fc2_invoke(signature);
        assert_eq!(
            verify(&fc2_request(&headers), &TestKey, now),
            Ok("acct".into())
        );

        let mut changed = headers.clone();
        changed.insert(
            "x-fc-stateful-async-invocation-id",
            "job-2".parse().expect("value"),
        );
        assert_eq!(
            verify(&fc2_request(&changed), &TestKey, now),
            Err(SignatureError::Mismatch)
        );
        let mut undated = headers.clone();
        undated.remove("date");
        assert_eq!(
            verify(&fc2_request(&undated), &TestKey, now),
            Err(SignatureError::Date("Date"))
        );
        let late = ms("2024-01-01T00:15:01Z");
        assert!(matches!(
            verify(&fc2_request(&headers), &TestKey, late),
            Err(SignatureError::Skewed { header: "Date", .. })
        ));
    }

    #[test]
    fn fc_scheme_from_the_node_sdk_checks_the_body_against_its_content_md5() {
        let headers = headers(&[
            ("date", "Mon, 30 Nov 2026 23:56:34 GMT"),
            ("x-fc-account-id", "1234567890"),
            ("x-fc-invocation-type", "Async"),
            ("x-fc-stateful-async-invocation-id", "job-1"),
            ("content-type", "application/octet-stream"),
            (
                "content-md5",
                "YmI2Y2I1YzY4ZGY0NjUyOTQxY2FmNjUyYTM2NmYyZDg=",
            ),
            (
                "authorization",
                "FC testAccessKeyId:s3Oqd3K7gU9wFijt9yvZuuBKnBWLJlxEFVtyrMPhe/E=",
            ),
        ]);
        let now = ms("2026-11-30T23:58:00Z");
        let mut request = fc2_request(&headers);
        assert_eq!(verify(&request, &TestKey, now), Ok("acct".into()));
        request.body = b"{\"a\":2}";
        assert_eq!(
            verify(&request, &TestKey, now),
            Err(SignatureError::BodyHash("Content-MD5"))
        );
    }

    #[test]
    fn an_unknown_scheme_or_no_header_is_refused() {
        let none = http::HeaderMap::new();
        assert_eq!(
            verify(&fc2_request(&none), &TestKey, 0),
            Err(SignatureError::Missing)
        );
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(matches!(
            verify(&fc2_request(&basic), &TestKey, 0),
            Err(SignatureError::Malformed(_))
        ));
    }
}
