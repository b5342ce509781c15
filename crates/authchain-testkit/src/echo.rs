//! An upstream that answers with the request it received.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::PeerError;

/// The prefix of request headers the echo server copies onto its
/// response: `x-echo-set-foo: bar` gives the response `foo: bar`, so a
/// test can make the upstream answer with a header of its choosing.
pub const ECHO_SET_PREFIX: &str = "x-echo-set-";

/// What reached the upstream, as the [`EchoServer`] reports it in its
/// JSON response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoedRequest {
    /// The method.
    pub method: String,
    /// The path with the query string.
    pub path: String,
    /// Every header line, in order, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl EchoedRequest {
    /// What a request with these parts and body reports: for an app of a
    /// test's own that echoes as the [`EchoServer`] does.
    pub fn of(parts: &http::request::Parts, body: &[u8]) -> Self {
        EchoedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.to_string(), ToString::to_string),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// Every value of a header, one per header line.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The values of a header, with comma-joined lines split and trimmed:
    /// `a: 1, 2` and two lines `a: 1`, `a: 2` both give `["1", "2"]`.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.header_all(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that answers every request with 200
/// and an [`EchoedRequest`] in JSON. Stops on drop.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Binds 127.0.0.1:0 and serves.
    pub async fn start() -> Result<Self, PeerError> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        echo(req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(EchoServer { addr, hits, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests reached it.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let echoed = EchoedRequest::of(&parts, &body);
    let json = serde_json::to_vec(&echoed).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(json)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in &parts.headers {
        if let Some(target) = name.as_str().strip_prefix(ECHO_SET_PREFIX)
            && let Ok(target) = HeaderName::try_from(target)
        {
            headers.append(target, value.clone());
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_what_it_got() {
        let server = EchoServer::start().await.unwrap();
        let reply = crate::client::post(
            server.addr(),
            "/a?b=c",
            &[("x-one", "1"), ("x-one", "2"), ("x-echo-set-x-back", "yes")],
            "hello",
        )
        .await
        .unwrap();
        assert_eq!(reply.header_values("x-back"), ["yes"]);
        let seen = reply.echoed().unwrap();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/a?b=c");
        assert_eq!(seen.header_all("x-one"), ["1", "2"]);
        assert_eq!(seen.body, "hello");
        assert_eq!(server.hits(), 1);
    }
}
