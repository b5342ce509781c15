//! nginx starts, proxies, and leaves no process behind when dropped.

#![allow(clippy::unwrap_used)]

use authchain_testkit::nginx::Nginx;
use authchain_testkit::{EchoServer, client};

#[tokio::test]
async fn nginx_proxies_and_dies_with_its_handle() {
    let upstream = EchoServer::start().await.unwrap();
    let config = format!(
        "server {{ listen 127.0.0.1:{{{{port}}}}; location / {{ proxy_pass http://{}; }} }}",
        upstream.addr()
    );
    let nginx = Nginx::start(&config).await.unwrap();
    let addr = nginx.addr();
    let reply = client::get(addr, "/hello", &[]).await.unwrap();
    assert_eq!(reply.echoed().unwrap().path, "/hello");
    let pid = nginx.pid();
    drop(nginx);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "nginx process {pid} outlived its handle"
    );
    // Nothing else of it serves the port either (no orphaned worker).
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
