//! A plain HTTP/1.1 GET for the scenarios that read the server's HTTP listener (metrics),
//! on hyper's own client.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::BenchError;

/// GET `url`: its status and body.
pub async fn get(url: &str) -> Result<(u16, String), BenchError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| BenchError::Server(format!("{url}: {e}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(uri)
        .await
        .map_err(|e| BenchError::Server(format!("GET {url}: {e}")))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| BenchError::Server(format!("GET {url}: {e}")))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of each unlabelled sample in a Prometheus text exposition.
pub fn unlabelled_samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.split_once(' ')?;
            if name.contains('{') {
                return None;
            }
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The value of each sample of metric `name` in a Prometheus text exposition, with its labels
/// as written (`block="data",from="cache"`).
pub fn labelled_samples(text: &str, name: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
