//! TLS from the gRPC passthrough to its server: rustls (aws-lc-rs) over a
//! TCP connection tonic's endpoint dials, verified and offered as
//! [`ClientTls`] says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use authchain_core::Error;
use authchain_core::tls::{ClientTls, rustls_config};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// A lazily connected channel to `authority` over TLS, verifying the server
/// as `tls.server_name` or else `host`.
pub(super) fn channel(
    endpoint: Endpoint,
    authority: &str,
    host: &str,
    tls: &ClientTls,
) -> Result<Channel, Error> {
    let name = tls.server_name.as_deref().unwrap_or(host);
    let name = ServerName::try_from(name.to_owned())
        .map_err(|_| Error::config(format!("`{name}` is not a DNS name or an IP address")))?;
    let mut config = rustls_config(tls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let origin = format!("https://{authority}")
        .parse()
        .map_err(|_| Error::config("not a valid address (expected host:port)"))?;
    Ok(endpoint
        .origin(origin)
        .connect_with_connector_lazy(Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        }))
}

/// Dials the URI's authority and runs the TLS handshake; tonic's endpoint
/// bounds both with `connectionTimeout`.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

type Connecting = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Connecting {
        let tls = self.tls.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port")
                })?;
            let tcp = TcpStream::connect(authority).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}
