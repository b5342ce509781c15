//! TLS for tests: a throwaway CA that issues server and client
//! certificates at run time, and [`TlsFront`], a real TLS server (rustls)
//! that terminates TLS, optionally requiring a client certificate, in
//! front of a plain server on loopback.
//!
//! ```no_run
//! # async fn demo(backend: std::net::SocketAddr) -> std::io::Result<()> {
//! use authchain_testkit::tls::{FrontSettings, Pki, TlsFront};
//!
//! let servers = Pki::new();
//! let clients = Pki::new();
//! let front = TlsFront::start(
//!     backend,
//!     FrontSettings::new(servers.issue(&["localhost", "127.0.0.1"])).require_client_cert(&clients),
//! )
//! .await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A CA made for one test.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A certificate the [`Pki`] issued, and its key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

impl Pki {
    /// A fresh CA.
    #[allow(clippy::expect_used)]
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("CA key");
        Pki {
            ca: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), good for a
    /// server and for a client.
    #[allow(clippy::expect_used)]
    pub fn issue(&self, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

impl Issued {
    /// A certificate and its PKCS#8 key read from PEM (a fixture's).
    #[allow(clippy::expect_used)]
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Issued {
        use rustls::pki_types::pem::PemObject;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate");
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .expect("a PEM PKCS#8 key")
            .secret_pkcs8_der()
            .to_vec();
        Issued {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cert_der,
            key_der,
        }
    }
}

/// A `kubernetes.io/tls` Secret manifest `namespace/name` in
/// `stringData`, as Gloo's passthrough `tlsConfig.secretRef` reads one: the
/// client certificate and key (`tls.crt`, `tls.key`) and the CA to trust
/// (`ca.crt`), each if given.
pub fn tls_secret(
    namespace: &str,
    name: &str,
    client: Option<&Issued>,
    ca: Option<&str>,
) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let mut doc = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name}, namespace: {namespace} }}\ntype: kubernetes.io/tls\nstringData:\n"
    );
    if let Some(client) = client {
        doc += &format!(
            "  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&client.cert_pem),
            indent(&client.key_pem)
        );
    }
    if let Some(ca) = ca {
        doc += &format!("  ca.crt: |\n{}", indent(ca));
    }
    doc
}

/// How a [`TlsFront`] speaks TLS.
#[derive(Debug)]
pub struct FrontSettings {
    identity: Issued,
    client_ca: Option<String>,
    tls12_only: bool,
}

impl FrontSettings {
    /// Serves `identity`, TLS 1.2 and 1.3, no client certificate asked.
    pub fn new(identity: Issued) -> Self {
        FrontSettings {
            identity,
            client_ca: None,
            tls12_only: false,
        }
    }

    /// Refuses a client without a certificate `ca` issued.
    pub fn require_client_cert(self, ca: &Pki) -> Self {
        self.require_client_cert_pem(&ca.ca_pem())
    }

    /// Refuses a client without a certificate the CA of `ca_pem` issued.
    pub fn require_client_cert_pem(mut self, ca_pem: &str) -> Self {
        self.client_ca = Some(ca_pem.to_owned());
        self
    }

    /// Speaks TLS 1.2 only.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    #[allow(clippy::expect_used)]
    fn server_config(&self) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .expect("versions");
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in pem_certs(pem) {
                    roots.add(cert).expect("client CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.identity.key_der.clone()));
        let mut config = builder
            .with_single_cert(vec![self.identity.cert_der.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// A TLS server on loopback that passes each connection's bytes, once
/// the handshake succeeded, to a plain server. Stopped on drop.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsFront {
    /// Listens on `127.0.0.1:0` in front of `backend`.
    pub async fn start(backend: SocketAddr, settings: FrontSettings) -> std::io::Result<TlsFront> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(settings.server_config()));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(TlsFront { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
