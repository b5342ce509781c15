//! TLS from the gRPC passthrough to its server: rustls (aws-lc-rs) over a
//! TCP connection tonic's endpoint dials, verified and offered as
//! [`ClientTls`] says.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use authchain_core::Error;
use authchain_core::tls::ClientTls;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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

/// The rustls (aws-lc-rs) client config for `tls`: its CA or the web PKI
/// roots, its client certificate, versions and suites.
fn rustls_config(tls: &ClientTls) -> Result<rustls::ClientConfig, Error> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(codes) = &tls.cipher_suites {
        provider
            .cipher_suites
            .retain(|s| codes.contains(&u16::from(s.suite())));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (tls.tls12, &rustls::version::TLS12),
        (tls.tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter_map(|(on, version)| on.then_some(version))
    .collect();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| Error::config(format!("no usable TLS parameters: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|_| Error::config("not PEM certificates"))?;
                roots
                    .add(cert)
                    .map_err(|_| Error::config("not a usable CA certificate"))?;
            }
            if roots.is_empty() {
                return Err(Error::config("no certificate in the PEM"));
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    let Some(identity) = &tls.identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| Error::config("the client certificate is not PEM certificates"))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|_| Error::config("the client key is not a PEM private key"))?;
    builder.with_client_auth_cert(chain, key).map_err(|e| {
        Error::config(format!(
            "the client certificate and key are not usable: {e}"
        ))
    })
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
