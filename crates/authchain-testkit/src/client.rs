//! A small HTTP/1.1 client for tests, with a time limit on every request.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::{EchoedRequest, PeerError};

/// How long one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PeerError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PeerError::new(format!(
                "response body is not the JSON expected ({e}); status {}, body: {}",
                self.status,
                self.text()
            ))
        })
    }

    /// The request an [`EchoServer`](crate::EchoServer) upstream saw.
    pub fn echoed(&self) -> Result<EchoedRequest, PeerError> {
        if self.status != StatusCode::OK {
            return Err(PeerError::new(format!(
                "expected the upstream's 200, got {} with body: {}",
                self.status,
                self.text()
            )));
        }
        self.json()
    }

    /// Every value of a response header, as text.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<non-ascii>"))
            .collect()
    }
}

/// Sends `request` to `addr` on a new connection and reads the whole
/// response. A `Host` header is added when missing.
pub async fn send(addr: SocketAddr, mut request: Request<Bytes>) -> Result<Reply, PeerError> {
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let what = format!("{} {} to {addr}", request.method(), request.uri());
    let exchange = async move {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(conn);
        let response = sender
            .send_request(request.map(Full::new))
            .await
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        conn.abort();
        Ok::<_, String>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(PeerError::new(format!("{what}: {e}"))),
        Err(_) => Err(PeerError::new(format!(
            "{what}: no response within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// Builds a request with these headers and body.
pub fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Request<Bytes>, PeerError> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(body.into())
        .map_err(|e| PeerError::new(format!("invalid test request: {e}")))
}

/// `GET path` with these headers.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, PeerError> {
    send(addr, request(Method::GET, path, headers, Bytes::new())?).await
}

/// `POST path` with these headers and body.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, PeerError> {
    send(addr, request(Method::POST, path, headers, body)?).await
}
