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
}
