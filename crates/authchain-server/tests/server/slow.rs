//! Slow and greedy clients: a check holds a permit only once it is read,
//! and a client that sends less than it announced is cut off.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Authchain, LISTENERS, check_request, grpc_status};

const CONFIG: &str = "maxConcurrentChecks: 16
authConfigs:
- name: open
  configs: [{ rules: { defaultAction: allow } }]
";

/// A POST check that announces a 10-byte body and sends 1 byte of it.
const STALLED: &[u8] = b"POST /check:open/x HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nx";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http_clients_hold_no_permit_a_grpc_check_needs() {
    let server = Authchain::start(&format!("{LISTENERS}{CONFIG}")).await;
    // 1,024 connections, each stalled in its body, against 16 permits.
    let mut stalled = Vec::new();
    for _ in 0..1024 {
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        stream.write_all(STALLED).await.unwrap();
        stalled.push(stream);
    }
    // Every gRPC check meanwhile is answered, and allowed.
    let mut client = server.grpc_client().await;
    let mut answered = 0;
    for _ in 0..64 {
        let response = client
            .check(check_request("open", "/x", &[]))
            .await
            .expect("answered, not shed")
            .into_inner();
        assert_eq!(grpc_status(&response), (0, 200));
        answered += 1;
    }
    // So is an HTTP check that is whole.
    let reply = server.http_check("open", "/x", &[]).await.unwrap();
    assert_eq!(reply.status, 200);
    eprintln!(
        "{} stalled connections held, {answered} gRPC checks answered",
        stalled.len()
    );
    drop(stalled);
}

#[tokio::test]
async fn a_body_that_does_not_come_is_a_408() {
    let listeners = LISTENERS.replace(
        "http: { address: '127.0.0.1:{{http_port}}' }",
        "http: { address: '127.0.0.1:{{http_port}}', readTimeout: 300ms }",
    );
    assert_ne!(listeners, LISTENERS);
    let server = Authchain::start(&format!("{listeners}{CONFIG}")).await;
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    stream.write_all(STALLED).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("answered in time").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A connection kept alive after a check is closed as late headers are.
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    stream
        .write_all(b"GET /check:open/x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("closed in time").unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
}

/// HTTP checks stalled in their bodies hold their bytes of the listener's
/// `maxBufferedBytes`: past it a check is a 429 (a deny on every proxy),
/// and once the stalled ones go, checks pass again. Without the budget,
/// connections that each start a large body and finish none held memory
/// without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_past_the_byte_budget_are_shed_until_the_stalled_ones_go() {
    let listeners = LISTENERS.replace(
        "http: { address: '127.0.0.1:{{http_port}}' }",
        "http: { address: '127.0.0.1:{{http_port}}', bodyLimit: 65536, maxBufferedBytes: 262144 }",
    );
    assert_ne!(listeners, LISTENERS);
    let server = Authchain::start(&format!("{listeners}{CONFIG}")).await;
    // A body that says 65,000 bytes and sends 64,000: four hold 256,000
    // of the 262,144.
    let stall = || async {
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        let mut head =
            b"POST /check:open/x HTTP/1.1\r\nhost: a\r\ncontent-length: 65000\r\n\r\n".to_vec();
        head.extend_from_slice(&[b'x'; 64_000]);
        stream.write_all(&head).await.unwrap();
        stream
    };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stall().await);
    }
    // A whole check with a 7,000-byte body.
    let check = || async {
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        let mut request = b"POST /check:open/x HTTP/1.1\r\nhost: a\r\nconnection: close\r\ncontent-length: 7000\r\n\r\n".to_vec();
        request.extend_from_slice(&[b'y'; 7_000]);
        stream.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        read.await.expect("answered in time").unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    // Shed once the stalled bytes have arrived. A check that came while
    // a stalled body was still arriving may have had that one shed (it is
    // answered): it is stalled again.
    let shed = async {
        loop {
            for stream in &mut stalled {
                if !matches!(stream.try_read(&mut [0; 64]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                {
                    *stream = stall().await;
                }
            }
            let answer = check().await;
            if !answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), shed)
        .await
        .expect("shed once the stalled bodies hold the budget");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // The stalled connections close, and give back.
    drop(stalled);
    let passes = async {
        while !check().await.starts_with("HTTP/1.1 200") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), passes)
        .await
        .expect("allowed again once the stalled connections are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_accepts_at_most_its_connections() {
    let listeners = LISTENERS
        .replace(
            "http: { address: '127.0.0.1:{{http_port}}' }",
            "http: { address: '127.0.0.1:{{http_port}}', maxConnections: 4 }",
        )
        .replace(
            "grpc: { address: '127.0.0.1:{{grpc_port}}' }",
            "grpc: { address: '127.0.0.1:{{grpc_port}}', maxConnections: 4 }",
        );
    assert_eq!(
        listeners.matches("maxConnections").count(),
        2,
        "{listeners}"
    );
    let server = Authchain::start(&format!("{listeners}{CONFIG}")).await;
    // Four connections that say nothing fill each listener.
    let mut held = Vec::new();
    for addr in [server.http, server.grpc] {
        for _ in 0..4 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
    }
    // A fifth is not served while they stay...
    let waiting = tokio::spawn({
        let http = server.http;
        async move { authchain_testkit::client::get(http, "/check:open/x", &[]).await }
    });
    let grpc = server.grpc;
    let waiting_grpc = tokio::spawn(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = authchain_grpc::envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::new(channel);
        let response = client.check(check_request("open", "/x", &[])).await;
        grpc_status(&response.unwrap().into_inner())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished() && !waiting_grpc.is_finished());
    // ...and is once one of them closes.
    held.remove(0);
    held.pop();
    let reply = tokio::time::timeout(Duration::from_secs(5), waiting).await;
    assert_eq!(reply.expect("served").unwrap().unwrap().status, 200);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting_grpc).await;
    assert_eq!(answer.expect("served").unwrap(), (0, 200));

    // The admin listener holds 64, whatever the others' limits.
    let mut admin_held = Vec::new();
    for _ in 0..64 {
        admin_held.push(TcpStream::connect(server.admin).await.unwrap());
    }
    let admin = server.admin;
    let probe =
        tokio::spawn(async move { authchain_testkit::client::get(admin, "/healthz", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!probe.is_finished());
    admin_held.pop();
    let reply = tokio::time::timeout(Duration::from_secs(5), probe).await;
    assert_eq!(reply.expect("served").unwrap().unwrap().status, 200);
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let listeners = LISTENERS
        .replace(
            "http: { address: '127.0.0.1:{{http_port}}' }",
            "http: { address: '127.0.0.1:{{http_port}}', idleTimeout: 300ms }",
        )
        .replace(
            "grpc: { address: '127.0.0.1:{{grpc_port}}' }",
            "grpc: { address: '127.0.0.1:{{grpc_port}}', idleTimeout: 300ms }",
        );
    assert_eq!(listeners.matches("idleTimeout").count(), 2, "{listeners}");
    let server = Authchain::start(&format!("{listeners}{CONFIG}")).await;
    // A connection that says nothing, one after a whole check (HTTP/1.1
    // keep-alive), and one that sent the HTTP/2 preface and settings.
    let check = b"GET /check:open/x HTTP/1.1\r\nhost: a\r\n\r\n";
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let cases: [(&str, _, &[u8]); 4] = [
        ("http, silent", server.http, b""),
        ("http, after a check", server.http, check),
        ("grpc, silent", server.grpc, b""),
        ("grpc, after the preface", server.grpc, preface),
    ];
    for (case, addr, sent) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        // Closed: the end of the stream, or a reset.
        let _ = read
            .await
            .unwrap_or_else(|_| panic!("{case}: still open after 5 s"));
        if sent == check {
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{case}");
        }
    }
}

/// A gRPC connection whose client never sends a byte is closed after the
/// first-byte timeout, though the server wrote its HTTP/2 settings on it
/// and its idle timeout is hours.
#[tokio::test]
async fn a_silent_grpc_connection_is_closed_though_the_server_spoke() {
    let server = Authchain::start(&format!("{LISTENERS}{CONFIG}")).await;
    let mut stream = TcpStream::connect(server.grpc).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer));
    let _ = read.await.expect("still open after 20 s");
    assert!(!answer.is_empty(), "the server wrote its settings first");
    let closed = started.elapsed();
    assert!(
        closed >= authchain_core::transport::FIRST_BYTE_TIMEOUT - Duration::from_secs(1),
        "closed after {closed:?}"
    );
}

/// An admin request whose headers come a byte a second (which keeps the
/// connection from ever being idle) is closed once its headers are late,
/// so that such clients cannot hold the admin listener's places.
#[tokio::test]
async fn an_admin_request_that_dribbles_its_headers_is_closed() {
    let server = Authchain::start(&format!("{LISTENERS}{CONFIG}")).await;
    let mut stream = TcpStream::connect(server.admin).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: a\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = std::time::Instant::now();
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if started.elapsed() > Duration::from_secs(20) {
            panic!("still open after 20 s");
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed after {:?}",
        started.elapsed()
    );
}
