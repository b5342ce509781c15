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

/// The status line a case expects.
enum Answer {
    /// Exactly this one.
    Is(&'static str),
    /// One that starts so, or none (the server closed unanswered).
    Refused(&'static str),
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

    // (case, the bytes sent, the status line: `Refused` when closing the
    // connection unanswered is right too)
    let huge = format!("x-huge: {}\r\n", "a".repeat(1024 * 1024));
    let many: String = (0..5000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let ok = get(b"authorization: Bearer ok\r\n");
    let cases = [
        ("a good check", ok.clone(), Answer::Is("HTTP/1.1 200 OK")),
        // Refused by the HTTP layer, not by a panic.
        (
            "a header of a megabyte",
            get(huge.as_bytes()),
            Answer::Refused("HTTP/1.1 431"),
        ),
        (
            "thousands of headers",
            get(many.as_bytes()),
            Answer::Refused("HTTP/1.1 431"),
        ),
        // A deny, not a crash.
        (
            "non-UTF-8 credentials",
            get(b"authorization: Bearer \xff\xfe\r\n"),
            Answer::Is("HTTP/1.1 401 Unauthorized"),
        ),
        // From a peer that is not trusted: refused, never read.
        (
            "a non-UTF-8 forwarded URI",
            b"GET /check:site/fallback HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\
              authorization: Bearer ok\r\nx-forwarded-uri: /\xff\r\n\r\n"
                .to_vec(),
            Answer::Is("HTTP/1.1 403 Forbidden"),
        ),
        (
            "garbage",
            b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
            Answer::Refused("HTTP/1.1 400"),
        ),
        (
            "a content-length that is no number",
            b"GET /check:site HTTP/1.1\r\nhost: a\r\ncontent-length: nope\r\n\r\n".to_vec(),
            Answer::Refused("HTTP/1.1 400"),
        ),
        ("still serving", ok, Answer::Is("HTTP/1.1 200 OK")),
    ];
    for (name, request, want) in cases {
        let status = raw(addr, &request).await;
        match want {
            Answer::Is(line) => assert_eq!(status, line, "case {name}"),
            Answer::Refused(prefix) => assert!(
                status.is_empty() || status.starts_with(prefix),
                "case {name}: {status}"
            ),
        }
    }

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
