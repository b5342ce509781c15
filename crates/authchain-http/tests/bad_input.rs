//! Bad input to the HTTP check server, over real TCP: absurd headers,
//! non-UTF-8 values, garbage. Each gets a clear answer, the server keeps
//! serving, and no task is left behind.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use authchain_core::{
    Allow, Chain, ChainStep, Decision, Engine, Generation, PluginRegistry, service_fn,
};
use authchain_http::{CheckConfig, CheckServer};
use http::{HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> (
    SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
    tokio::sync::oneshot::Sender<()>,
) {
    // Allows a request whose authorization is `Bearer ok` (as text), and
    // echoes the original path it saw in `x-seen-path`.
    let step = service_fn(|req| {
        let ok = req.header_str("authorization") == Some("Bearer ok");
        let seen = HeaderValue::try_from(req.path.clone()).ok();
        Box::pin(async move {
            if !ok {
                return Ok(Decision::unauthenticated());
            }
            let mut allow = Allow::new();
            if let Some(seen) = seen {
                allow = allow.set_header(HeaderName::from_static("x-seen-path"), seen);
            }
            Ok(allow.into())
        })
    });
    let chain = Chain::builder("site")
        .step(ChainStep::new("s", Arc::new(step)))
        .build()
        .unwrap();
    let engine = Arc::new(Engine::new(PluginRegistry::new()));
    engine
        .install(Generation::from_chains([chain], 1).unwrap())
        .await
        .unwrap();
    let server = CheckServer::new(engine, CheckConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (addr, task, stop)
}

/// Sends raw bytes, returns the status line (or "" when the server closed).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read everything.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response));
    let _ = read.await.expect("the server answers or closes in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

fn get(extra: &[u8]) -> Vec<u8> {
    let mut request =
        b"GET /check:site/hello HTTP/1.1\r\nhost: a\r\nconnection: close\r\n".to_vec();
    request.extend_from_slice(extra);
    request.extend_from_slice(b"\r\n");
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_and_malformed_requests_get_clear_answers_and_nothing_leaks() {
    let (addr, task, stop) = start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    assert_eq!(
        raw(addr, &get(b"authorization: Bearer ok\r\n")).await,
        "HTTP/1.1 200 OK"
    );

    // A header of a megabyte: refused by the HTTP layer, not by a panic.
    let huge = format!("x-huge: {}\r\n", "a".repeat(1024 * 1024));
    let status = raw(addr, &get(huge.as_bytes())).await;
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "{status}"
    );

    // Thousands of headers.
    let many: String = (0..5000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let status = raw(addr, &get(many.as_bytes())).await;
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "{status}"
    );

    // Non-UTF-8 credentials: a deny, not a crash.
    assert_eq!(
        raw(addr, &get(b"authorization: Bearer \xff\xfe\r\n")).await,
        "HTTP/1.1 401 Unauthorized"
    );
    // A non-UTF-8 forwarded URI from a peer that is not trusted: ignored,
    // the check path is used.
    let mut stream_req =
        b"GET /check:site/fallback HTTP/1.1\r\nhost: a\r\nconnection: close\r\n".to_vec();
    stream_req.extend_from_slice(b"authorization: Bearer ok\r\nx-forwarded-uri: /\xff\r\n\r\n");
    assert_eq!(raw(addr, &stream_req).await, "HTTP/1.1 200 OK");

    // Garbage.
    let status = raw(addr, b"\x00\x01\x02 not http at all\r\n\r\n").await;
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 400"),
        "{status}"
    );
    let status = raw(
        addr,
        b"GET /check:site HTTP/1.1\r\nhost: a\r\ncontent-length: nope\r\n\r\n",
    )
    .await;
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 400"),
        "{status}"
    );

    // Still serving.
    assert_eq!(
        raw(addr, &get(b"authorization: Bearer ok\r\n")).await,
        "HTTP/1.1 200 OK"
    );

    // Every connection task has ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > baseline && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        baseline,
        "connection tasks left behind"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
