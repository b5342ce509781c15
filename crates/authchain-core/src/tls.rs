//! Gloo's `tlsConfig` for the passthrough steps, resolved to what a TLS
//! client needs.
//!
//! Both passthroughs (`passThroughAuth.grpc`, `passThroughAuth.http`) take
//! Gloo's block:
//!
//! ```yaml
//! tlsConfig:
//!   secretRef: { name: passthrough-mtls, namespace: gloo-system }
//!   sslParams:
//!     minimumProtocolVersion: TLSv1_3   # TLS_AUTO (1.2), TLSv1_2, TLSv1_3
//!     maximumProtocolVersion: TLSv1_3   # TLS_AUTO (1.3), TLSv1_2, TLSv1_3
//!     cipherSuites: [ECDHE-ECDSA-AES128-GCM-SHA256]   # authchain's, as Envoy names them
//! ```
//!
//! The Secret is a `kubernetes.io/tls` one read beside the AuthConfig
//! ([`resources`](crate::resources)): `tls.crt` and `tls.key` (together)
//! are the client certificate chain and key, `ca.crt` the CA the server's
//! certificate must chain to. Without `ca.crt` (or without a `secretRef`:
//! `tlsConfig: {}`) the server is verified against the web PKI roots, as
//! Gloo's "simple TLS". A reference without a namespace means the
//! AuthConfig's own; one with a namespace may name any Secret that was read.
//!
//! This module knows no TLS library: it checks the block and the Secret and
//! gives a [`ClientTls`], which each passthrough turns into its rustls
//! client config. Key material never appears in `Debug` or in an error.

use std::fmt;

#[cfg(feature = "rustls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "rustls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use serde::Deserialize;

use crate::resources::ResourceRef;
use crate::{BuildContext, Error};

/// The client certificate chain entry of a TLS Secret.
pub const SECRET_CERT: &str = "tls.crt";
/// The client key entry of a TLS Secret.
pub const SECRET_KEY: &str = "tls.key";
/// The CA entry of a TLS Secret.
pub const SECRET_CA: &str = "ca.crt";

/// Gloo's `PassThroughGrpcTLSConfig` / `PassThroughHttpTLSConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// The Secret with `tls.crt`, `tls.key` and `ca.crt` (each optional).
    #[serde(default)]
    pub secret_ref: Option<ResourceRef>,
    /// Protocol versions and cipher suites.
    #[serde(default)]
    pub ssl_params: Option<SslParameters>,
}

/// Gloo's `SslParameters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct SslParameters {
    /// The lowest version spoken (default TLS 1.2).
    #[serde(default)]
    pub minimum_protocol_version: Option<ProtocolVersion>,
    /// The highest version spoken (default TLS 1.3).
    #[serde(default)]
    pub maximum_protocol_version: Option<ProtocolVersion>,
    /// TLS 1.2 (and, if named, 1.3) cipher suites by their OpenSSL names,
    /// as Envoy's `cipher_suites` takes them. Not in Gloo's passthrough
    /// block: it is the field of Gloo's listener and upstream `SslParameters`.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

/// A TLS protocol version, as Gloo's enum spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub enum ProtocolVersion {
    /// The default of the place it is used in.
    #[serde(rename = "TLS_AUTO")]
    Auto,
    /// TLS 1.0: refused (rustls does not speak it).
    #[serde(rename = "TLSv1_0")]
    Tls1_0,
    /// TLS 1.1: refused (rustls does not speak it).
    #[serde(rename = "TLSv1_1")]
    Tls1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSv1_2")]
    Tls1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSv1_3")]
    Tls1_3,
}

/// The client certificate chain and its key, PEM. Its `Debug` shows
/// neither.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity(<redacted>)")
    }
}

/// What a TLS client to a passthrough server is given: whom to trust,
/// who it is, the versions and the suites. Its `Debug` shows no key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClientTls {
    /// PEM CA certificates the server must chain to; `None`: the web PKI
    /// roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and key, for mutual TLS.
    pub identity: Option<ClientIdentity>,
    /// The name to verify and send as SNI; `None`: the host dialled.
    pub server_name: Option<String>,
    /// Whether TLS 1.2 may be spoken.
    pub tls12: bool,
    /// Whether TLS 1.3 may be spoken.
    pub tls13: bool,
    /// The IANA codes of the suites offered; `None`: the library's defaults.
    pub cipher_suites: Option<Vec<u16>>,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls {
            ca_pem: None,
            identity: None,
            server_name: None,
            tls12: true,
            tls13: true,
            cipher_suites: None,
        }
    }
}

impl ClientTls {
    /// authchain's `tls: {caFile | caPem}` block: the CA of the file (read
    /// through `context`) or of the text (one of them at most), else the
    /// web PKI roots. A file that cannot be read is an error at `caFile`
    /// naming it.
    pub fn from_ca(
        context: &BuildContext<'_>,
        ca_file: Option<&std::path::Path>,
        ca_pem: Option<&str>,
    ) -> Result<ClientTls, Error> {
        let pem = match (ca_file, ca_pem) {
            (Some(path), None) => context.read(path).map_err(|e| e.at("caFile"))?,
            (None, Some(pem)) => pem.as_bytes().to_vec(),
            (None, None) => return Ok(ClientTls::default()),
            (Some(_), Some(_)) => return Err(Error::config("set caFile or caPem, not both")),
        };
        Ok(ClientTls::default().with_ca_pem(pem))
    }

    /// Trusts the CA certificates of `pem` (instead of the web PKI roots).
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and key.
    pub fn with_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some(ClientIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Verifies the server as `name` (and sends it as SNI).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// The type of the Secrets a `secretRef` names.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

impl TlsConfig {
    /// Resolves the block against the Secrets of `context`. Errors are
    /// placed under the block (`secretRef`, `sslParams.cipherSuites[1]`)
    /// and name the Secret and its entry, never a value.
    pub fn resolve(&self, context: &BuildContext<'_>) -> Result<ClientTls, Error> {
        let mut tls = ClientTls::default();
        if let Some(reference) = &self.secret_ref {
            let secret = context
                .resources
                .secret_ref(reference, context.namespace)
                .map_err(|e| e.at("secretRef"))?;
            let named = |what: &str| {
                Error::config(format!(
                    "the Secret {}/{} {what}",
                    secret.namespace, secret.name
                ))
                .at("secretRef")
            };
            // As Gloo, which makes TLS material of these alone.
            if secret.kind != TLS_SECRET_TYPE {
                return Err(named(&format!(
                    "is of type `{}`, not `{TLS_SECRET_TYPE}`",
                    secret.kind
                )));
            }
            // Kubernetes wants `tls.crt` and `tls.key` in such a Secret: a
            // CA alone comes with them empty, which says "none" (Gloo's
            // reading too).
            let pem = |entry: &str| match secret.data.get(entry) {
                Some(value) if value.trim_ascii().is_empty() => Ok(None),
                Some(value) if !value.trim_ascii_start().starts_with(b"-----BEGIN ") => {
                    Err(named(&format!("has a `{entry}` that is not PEM")))
                }
                Some(value) => Ok(Some(value.clone())),
                None => Ok(None),
            };
            let (cert, key, ca) = (pem(SECRET_CERT)?, pem(SECRET_KEY)?, pem(SECRET_CA)?);
            tls.identity = match (cert, key) {
                (Some(cert_pem), Some(key_pem)) => Some(ClientIdentity { cert_pem, key_pem }),
                (None, None) => None,
                _ => {
                    return Err(named(&format!(
                        "has one of `{SECRET_CERT}` and `{SECRET_KEY}`: they go together"
                    )));
                }
            };
            if tls.identity.is_none() && ca.is_none() {
                return Err(named(&format!(
                    "has none of `{SECRET_CERT}`, `{SECRET_KEY}` and `{SECRET_CA}`"
                )));
            }
            tls.ca_pem = ca;
        }
        if let Some(params) = &self.ssl_params {
            params.apply(&mut tls).map_err(|e| e.at("sslParams"))?;
        }
        Ok(tls)
    }
}

impl SslParameters {
    fn apply(&self, tls: &mut ClientTls) -> Result<(), Error> {
        let version = |v: Option<ProtocolVersion>, default: u8, at: &str| match v {
            None | Some(ProtocolVersion::Auto) => Ok(default),
            Some(ProtocolVersion::Tls1_2) => Ok(2),
            Some(ProtocolVersion::Tls1_3) => Ok(3),
            Some(ProtocolVersion::Tls1_0 | ProtocolVersion::Tls1_1) => Err(Error::config(
                "TLS below 1.2 is not available: rustls speaks TLSv1_2 and TLSv1_3 only",
            )
            .at(at)),
        };
        let min = version(self.minimum_protocol_version, 2, "minimumProtocolVersion")?;
        let max = version(self.maximum_protocol_version, 3, "maximumProtocolVersion")?;
        if min > max {
            return Err(Error::config("below minimumProtocolVersion").at("maximumProtocolVersion"));
        }
        tls.tls12 = min <= 2;
        tls.tls13 = max >= 3;
        if self.cipher_suites.is_empty() {
            return Ok(());
        }
        let mut codes = Vec::with_capacity(self.cipher_suites.len() + TLS13_SUITES.len());
        for (i, name) in self.cipher_suites.iter().enumerate() {
            let code = cipher_suite(name).map_err(|e| e.at(format!("cipherSuites[{i}]")))?;
            if !codes.contains(&code) {
                codes.push(code);
            }
        }
        let names_tls13 = codes.iter().any(|c| is_tls13(*c));
        if tls.tls12 && !codes.iter().any(|c| !is_tls13(*c)) {
            return Err(Error::config(
                "no TLS 1.2 suite is named: name one, or set minimumProtocolVersion: TLSv1_3",
            )
            .at("cipherSuites"));
        }
        if !names_tls13 {
            // As in Envoy, the list chooses among TLS 1.2 suites; TLS 1.3
            // keeps its own unless the list names some.
            codes.extend(TLS13_SUITES.iter().map(|(_, code)| *code));
        }
        tls.cipher_suites = Some(codes);
        Ok(())
    }
}

/// TLS 1.3 suites: their names (OpenSSL's are IANA's) and codes.
const TLS13_SUITES: [(&str, u16); 3] = [
    ("TLS_AES_128_GCM_SHA256", 0x1301),
    ("TLS_AES_256_GCM_SHA384", 0x1302),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
];

/// TLS 1.2 suites rustls offers: their OpenSSL names and IANA codes.
const TLS12_SUITES: [(&str, u16); 6] = [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", 0xc02b),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", 0xc02c),
    ("ECDHE-RSA-AES128-GCM-SHA256", 0xc02f),
    ("ECDHE-RSA-AES256-GCM-SHA384", 0xc030),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", 0xcca9),
    ("ECDHE-RSA-CHACHA20-POLY1305", 0xcca8),
];

/// Suites Envoy (BoringSSL) knows and rustls does not offer: CBC, plain
/// RSA key exchange, PSK, 3DES.
const UNSUPPORTED_SUITES: [&str; 14] = [
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
];

fn is_tls13(code: u16) -> bool {
    TLS13_SUITES.iter().any(|(_, c)| *c == code)
}

/// The IANA code of a cipher suite by its OpenSSL name (TLS 1.3 suites by
/// their IANA name), or an error that names it.
pub fn cipher_suite(name: &str) -> Result<u16, Error> {
    let name = name.trim();
    if let Some((_, code)) = TLS12_SUITES
        .iter()
        .chain(&TLS13_SUITES)
        .find(|(n, _)| *n == name)
    {
        return Ok(*code);
    }
    if UNSUPPORTED_SUITES.contains(&name) {
        return Err(Error::config(format!(
            "`{name}` is not offered by rustls, which has AEAD suites with ECDHE only: {}",
            TLS12_SUITES
                .iter()
                .chain(&TLS13_SUITES)
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Err(Error::config(format!("unknown cipher suite `{name}`")))
}

#[cfg(feature = "rustls")]
/// The rustls (aws-lc-rs) client config for `tls`: its CA or the web PKI
/// roots, its client certificate, versions and suites. Errors name what
/// is wrong, never key material.
pub fn rustls_config(tls: &ClientTls) -> Result<rustls::ClientConfig, Error> {
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
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    fn resources(yaml: &str) -> Resources {
        crate::config::Documents::parse("r.yaml", yaml, crate::Format::Yaml)
            .unwrap()
            .resources
    }

    fn resolve(block: serde_json::Value, resources: &Resources) -> Result<ClientTls, Error> {
        let config: TlsConfig =
            serde_json::from_value(block).map_err(|e| Error::config(e.to_string()))?;
        config.resolve(&BuildContext::new("c", "s", "p").with_resources(resources, "gloo-system"))
    }

    /// `{secretRef: {name: mtls}}` against `resources`.
    fn resolve_mtls(resources: &Resources) -> Result<ClientTls, Error> {
        resolve(
            serde_json::json!({"secretRef": {"name": "mtls"}}),
            resources,
        )
    }

    const SECRET: &str = "apiVersion: v1
kind: Secret
metadata: { name: mtls, namespace: gloo-system }
type: kubernetes.io/tls
stringData:
  tls.crt: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"
  tls.key: \"-----BEGIN PRIVATE KEY-----\\nk-s3cret\\n-----END PRIVATE KEY-----\\n\"
  ca.crt: \"-----BEGIN CERTIFICATE-----\\nMIIC\\n-----END CERTIFICATE-----\\n\"
";

    #[test]
    fn a_secret_gives_identity_and_ca_and_hides_the_key() {
        let resources = resources(SECRET);
        let tls = resolve_mtls(&resources).unwrap();
        assert!(tls.identity.is_some() && tls.ca_pem.is_some());
        assert!((tls.tls12, tls.tls13, tls.cipher_suites.is_none()) == (true, true, true));
        let shown = format!("{tls:?} {tls:#?} {resources:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        // `tlsConfig: {}` is TLS against the web PKI roots.
        assert_eq!(
            resolve(serde_json::json!({}), &resources).unwrap(),
            ClientTls::default()
        );
    }

    #[test]
    fn references_resolve_in_the_authconfig_s_namespace_unless_they_name_one() {
        let other = SECRET.replace("namespace: gloo-system", "namespace: other");
        let resources = resources(&other);
        let e = resolve_mtls(&resources).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secretRef: no Secret gloo-system/mtls was read"
        );
        resolve(
            serde_json::json!({"secretRef": {"name": "mtls", "namespace": "other"}}),
            &resources,
        )
        .unwrap();
    }

    /// The only CA-only `kubernetes.io/tls` Secret the API server takes.
    #[test]
    fn empty_certificate_and_key_entries_are_none() {
        let ca_only = SECRET
            .replace(
                "\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"",
                "\"\"",
            )
            .replace(
                "\"-----BEGIN PRIVATE KEY-----\\nk-s3cret\\n-----END PRIVATE KEY-----\\n\"",
                "\"\"",
            );
        assert!(ca_only.contains("tls.key: \"\""), "{ca_only}");
        let tls = resolve_mtls(&resources(&ca_only)).unwrap();
        assert!(tls.identity.is_none() && tls.ca_pem.is_some());
    }

    #[test]
    fn a_secret_of_another_type_is_refused_by_name() {
        let resources = resources(&SECRET.replace("kubernetes.io/tls", "Opaque"));
        let e = resolve_mtls(&resources).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secretRef: the Secret gloo-system/mtls is of type `Opaque`, not `kubernetes.io/tls`"
        );
    }

    #[test]
    fn a_secret_without_usable_entries_is_named() {
        let half = "apiVersion: v1
kind: Secret
metadata: { name: half, namespace: gloo-system }
type: kubernetes.io/tls
stringData: { tls.crt: \"-----BEGIN CERTIFICATE-----\\n\" }
---
apiVersion: v1
kind: Secret
metadata: { name: none, namespace: gloo-system }
type: kubernetes.io/tls
stringData: { api-key: k-s3cret }
---
apiVersion: v1
kind: Secret
metadata: { name: raw, namespace: gloo-system }
type: kubernetes.io/tls
stringData: { ca.crt: k-s3cret }
";
        let resources = resources(half);
        for (name, want) in [
            (
                "half",
                "secretRef: the Secret gloo-system/half has one of `tls.crt` and `tls.key`: they go together",
            ),
            (
                "none",
                "secretRef: the Secret gloo-system/none has none of `tls.crt`, `tls.key` and `ca.crt`",
            ),
            (
                "raw",
                "secretRef: the Secret gloo-system/raw has a `ca.crt` that is not PEM",
            ),
        ] {
            let e =
                resolve(serde_json::json!({"secretRef": {"name": name}}), &resources).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn ssl_params_map_to_versions_and_suites() {
        let none = Resources::new();
        let params = |p: serde_json::Value| resolve(serde_json::json!({ "sslParams": p }), &none);
        let tls = params(serde_json::json!({"minimumProtocolVersion": "TLSv1_3"})).unwrap();
        assert_eq!((tls.tls12, tls.tls13), (false, true));
        let tls = params(serde_json::json!({"maximumProtocolVersion": "TLSv1_2", "minimumProtocolVersion": "TLS_AUTO"})).unwrap();
        assert_eq!((tls.tls12, tls.tls13), (true, false));
        let tls =
            params(serde_json::json!({"cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"]})).unwrap();
        assert_eq!(
            tls.cipher_suites,
            Some(vec![0xc02f, 0x1301, 0x1302, 0x1303])
        );
        let tls = params(serde_json::json!({"cipherSuites": ["TLS_AES_256_GCM_SHA384"], "minimumProtocolVersion": "TLSv1_3"})).unwrap();
        assert_eq!(tls.cipher_suites, Some(vec![0x1302]));

        for (p, want) in [
            (
                serde_json::json!({"minimumProtocolVersion": "TLSv1_1"}),
                "sslParams.minimumProtocolVersion: TLS below 1.2 is not available: rustls speaks TLSv1_2 and TLSv1_3 only",
            ),
            (
                serde_json::json!({"maximumProtocolVersion": "TLSv1_0"}),
                "sslParams.maximumProtocolVersion: TLS below 1.2 is not available: rustls speaks TLSv1_2 and TLSv1_3 only",
            ),
            (
                serde_json::json!({"minimumProtocolVersion": "TLSv1_3", "maximumProtocolVersion": "TLSv1_2"}),
                "sslParams.maximumProtocolVersion: below minimumProtocolVersion",
            ),
            (
                serde_json::json!({"cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA"]}),
                "sslParams.cipherSuites[1]: `AES128-SHA` is not offered by rustls",
            ),
            (
                serde_json::json!({"cipherSuites": ["NOPE"]}),
                "sslParams.cipherSuites[0]: unknown cipher suite `NOPE`",
            ),
            (
                serde_json::json!({"cipherSuites": ["TLS_AES_128_GCM_SHA256"]}),
                "sslParams.cipherSuites: no TLS 1.2 suite is named",
            ),
        ] {
            let e = params(p).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }
}
