//! A small HTTP/1.1 client for tests, with a time limit on every request;
//! [`raw`] sends a request's bytes exactly as written.

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
        header_values(&self.headers, name)
    }
}

/// Every value of header `name` in `headers`, as text.
pub fn header_values<'h>(headers: &'h http::HeaderMap, name: &str) -> Vec<&'h str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("<non-ascii>"))
        .collect()
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

/// Sends `bytes` to `addr` on a new connection exactly as they are (the
/// request line, header names and their case, order and duplicates are
/// not touched, so a path such as `/a/%2e%2e/b` or `/a\b` reaches the
/// peer as written) and reads one response. Write `Connection: close`
/// in the request: the response ends at its `Content-Length`, its last
/// chunk, or when the peer closes the connection (the response to a
/// `HEAD` has no body). Interim (1xx) responses are skipped.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Result<Reply, PeerError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let is_head = bytes.starts_with(b"HEAD ");

    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let read = match stream.read(&mut chunk).await {
                Ok(n) => n,
                // A reset after a complete response still counts.
                Err(e) => match parse_response(&buf, true, is_head) {
                    Ok(Some(reply)) => return Ok(reply),
                    _ => return Err(format!("read: {e}")),
                },
            };
            buf.extend_from_slice(&chunk[..read]);
            if let Some(reply) = parse_response(&buf, read == 0, is_head)? {
                return Ok(reply);
            }
            if read == 0 {
                return Err(if buf.is_empty() {
                    "the connection closed without a response".to_owned()
                } else {
                    format!(
                        "the connection closed in a partial response: {}",
                        String::from_utf8_lossy(&buf)
                    )
                });
            }
        }
    };
    let what = format!(
        "{:?} to {addr}",
        String::from_utf8_lossy(bytes.split(|b| *b == b'\n').next().unwrap_or_default()).trim()
    );
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(PeerError::new(format!("{what}: {e}"))),
        Err(_) => Err(PeerError::new(format!(
            "{what}: no response within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// Parses an HTTP/1.x response from `buf`: `Ok(None)` while it is
/// incomplete (`eof`: the peer closed, so a body without a length ends
/// here; `is_head`: it answers a `HEAD`, so it has no body).
fn parse_response(buf: &[u8], eof: bool, is_head: bool) -> Result<Option<Reply>, String> {
    let mut buf = buf;
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = std::str::from_utf8(&buf[..head_end])
            .map_err(|_| "the response head is not UTF-8".to_owned())?;
        let rest = &buf[head_end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let code = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|s| s.get(2..5))
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("not an HTTP/1.x status line: {status_line:?}"))?;
        let mut headers = HeaderMap::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!("not a header line: {line:?}"));
            };
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
        if code.is_informational() {
            buf = rest;
            continue;
        }
        let chunked = headers
            .get(header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = if is_head || code == StatusCode::NO_CONTENT || code == StatusCode::NOT_MODIFIED
        {
            Some(Vec::new())
        } else if chunked {
            dechunk(rest)?
        } else if let Some(length) = length {
            rest.get(..length).map(<[u8]>::to_vec)
        } else {
            eof.then(|| rest.to_vec())
        };
        return Ok(body.map(|body| Reply {
            status: code,
            headers,
            body: Bytes::from(body),
        }));
    }
}

/// A chunked body: `Ok(None)` until its last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EchoServer;

    #[tokio::test]
    async fn raw_sends_the_bytes_as_written() {
        let server = EchoServer::start().await.unwrap();
        let request = b"GET /a/%2e%2e/b?q=/../c HTTP/1.1\r\nHost: x\r\nX_Odd-Case: 1\r\nx-two: a\r\nx-two: b\r\nConnection: close\r\n\r\n";
        let reply = raw(server.addr(), request).await.unwrap();
        let seen = reply.echoed().unwrap();
        assert_eq!(seen.path, "/a/%2e%2e/b?q=/../c");
        assert_eq!(seen.header_all("x_odd-case"), ["1"]);
        assert_eq!(seen.header_all("x-two"), ["a", "b"]);
    }

    #[test]
    fn responses_parse_by_length_chunks_and_eof() {
        let fixed = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nno";
        let reply = parse_response(fixed, false, false).unwrap().unwrap();
        assert_eq!(reply.status, 403);
        assert_eq!(reply.text(), "no");
        assert_eq!(reply.header_values("x-a"), ["1"]);
        assert!(
            parse_response(&fixed[..fixed.len() - 1], false, false)
                .unwrap()
                .is_none()
        );

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked, false, false)
                .unwrap()
                .unwrap()
                .text(),
            "abcde"
        );
        assert!(
            parse_response(&chunked[..chunked.len() - 5], false, false)
                .unwrap()
                .is_none()
        );

        let until_eof = b"HTTP/1.0 500 Oops\r\n\r\nbody";
        assert!(parse_response(until_eof, false, false).unwrap().is_none());
        assert_eq!(
            parse_response(until_eof, true, false)
                .unwrap()
                .unwrap()
                .text(),
            "body"
        );
        assert!(parse_response(b"garbage\r\n\r\n", true, false).is_err());
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
        assert_eq!(
            parse_response(head, false, true)
                .unwrap()
                .unwrap()
                .body
                .len(),
            0
        );
    }
}
