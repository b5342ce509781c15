//! Kubernetes Secrets and ConfigMaps in a world of files.
//!
//! Gloo's AuthConfigs point at Secrets (API keys, passwords, TLS material)
//! and ConfigMaps (Rego modules) by namespace and name, or pick Secrets by
//! their labels. authchain reads those objects from the same files as the
//! AuthConfigs, as `kubectl get -o yaml` writes them:
//!
//! ```yaml
//! apiVersion: v1
//! kind: Secret
//! metadata: { name: infra-apikey, namespace: gloo-system, labels: { team: infrastructure } }
//! type: extauth.solo.io/apikey
//! data:                      # base64, as Kubernetes stores it
//!   api-key: TjJZd01ESXhaVEV0TkdVek5TMWpOemd6TFRSa1lqQXRZakUyWXpSa1pHVm1OamN5
//! stringData:                # or plain text, which wins over `data`
//!   user-id: alice
//! ```
//!
//! A `kind: List` of them and of AuthConfigs (`kubectl get secrets -o
//! yaml`) is read item by item. An object without a namespace is in `default`; a reference
//! without one means the namespace of the AuthConfig that holds it. A
//! Secret's values never appear in an error or in `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Error;

/// The namespace of an object or reference that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Secrets and ConfigMaps, by namespace and name.
#[derive(Clone, Default, PartialEq)]
pub struct Resources {
    secrets: BTreeMap<(String, String), Secret>,
    config_maps: BTreeMap<(String, String), ConfigMap>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("secrets", &self.secrets.values().collect::<Vec<_>>())
            .field(
                "config_maps",
                &self.config_maps.values().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A Kubernetes Secret: its type, labels and decoded data.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Secret {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its `type` (`Opaque` when it gives none).
    pub kind: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its data, decoded: `data` from base64, then `stringData` over it.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("labels", &self.labels)
            .field("data_keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The type of Gloo's account-credentials Secrets (`glooctl create secret
/// authcredentials`): an LDAP service account, HMAC shared secrets.
pub const ACCOUNT_CREDENTIALS_TYPE: &str = "extauth.solo.io/accountcredentials";

/// A Kubernetes ConfigMap: its labels and data.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConfigMap {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its data.
    pub data: BTreeMap<String, String>,
}

/// A reference to an object, as Gloo writes one (`{name, namespace}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    /// The object's name.
    pub name: String,
    /// Its namespace; none: the referring AuthConfig's.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl ResourceRef {
    /// The namespace and name it names, from an AuthConfig in `namespace`.
    pub fn resolve<'a>(&'a self, namespace: &'a str) -> (&'a str, &'a str) {
        let ns = match self.namespace.as_deref() {
            Some(ns) => ns,
            None if namespace.is_empty() => DEFAULT_NAMESPACE,
            None => namespace,
        };
        (ns, &self.name)
    }
}

impl Resources {
    /// None.
    pub const fn new() -> Self {
        Resources {
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.config_maps.is_empty()
    }

    /// The Secret `namespace/name`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The Secret a reference from an AuthConfig in `namespace` names, or
    /// an error that names it.
    pub fn secret_ref(&self, reference: &ResourceRef, namespace: &str) -> Result<&Secret, Error> {
        let (ns, name) = reference.resolve(namespace);
        self.secret(ns, name)
            .ok_or_else(|| Error::config(format!("no Secret {ns}/{name} was read")))
    }

    /// Every Secret whose labels include all of `selector`'s, in namespace
    /// and name order.
    pub fn secrets_labelled<'a>(
        &'a self,
        selector: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'a Secret> + 'a {
        self.secrets
            .values()
            .filter(move |s| selector.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
    }

    /// The ConfigMap `namespace/name`.
    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        self.config_maps
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// The ConfigMap a reference from an AuthConfig in `namespace` names,
    /// or an error that names it.
    pub fn config_map_ref(
        &self,
        reference: &ResourceRef,
        namespace: &str,
    ) -> Result<&ConfigMap, Error> {
        let (ns, name) = reference.resolve(namespace);
        self.config_map(ns, name)
            .ok_or_else(|| Error::config(format!("no ConfigMap {ns}/{name} was read")))
    }

    /// Adds `other`'s objects; one already here by namespace and name is
    /// an error naming it.
    pub fn extend(&mut self, other: Resources) -> Result<(), Error> {
        for (key, secret) in other.secrets {
            insert_new(&mut self.secrets, key, secret, "Secret")?;
        }
        for (key, map) in other.config_maps {
            insert_new(&mut self.config_maps, key, map, "ConfigMap")?;
        }
        Ok(())
    }

    /// Reads `doc` when it is a Secret or a ConfigMap (`None`: another
    /// kind). Errors name the field, never a value.
    pub(crate) fn read(&mut self, doc: &Map<String, Value>) -> Option<Result<(), Error>> {
        let kind = doc.get("kind").and_then(Value::as_str)?;
        let read = match kind {
            "Secret" => self.read_secret(doc),
            "ConfigMap" => self.read_config_map(doc),
            _ => return None,
        };
        Some(read)
    }

    fn read_secret(&mut self, doc: &Map<String, Value>) -> Result<(), Error> {
        let head = Head::read(doc, &["type", "data", "stringData", "immutable"])?;
        let kind = match doc.get("type") {
            None | Some(Value::Null) => "Opaque".to_owned(),
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(Error::config("expected a string").at("type")),
        };
        let mut data = BTreeMap::new();
        for (key, value) in strings(doc, "data")? {
            // Line breaks are `base64`'s default output, which Kubernetes
            // reads too.
            let mut value = value;
            value.retain(|c| !c.is_ascii_whitespace());
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&value)
                .map_err(|_| Error::config("expected base64").at(format!("data.{key}")))?;
            data.insert(key, decoded);
        }
        for (key, value) in strings(doc, "stringData")? {
            data.insert(key, value.into_bytes());
        }
        let secret = Secret {
            namespace: head.namespace,
            name: head.name,
            kind,
            labels: head.labels,
            data,
        };
        let key = (secret.namespace.clone(), secret.name.clone());
        insert_new(&mut self.secrets, key, secret, "Secret")
    }

    fn read_config_map(&mut self, doc: &Map<String, Value>) -> Result<(), Error> {
        let head = Head::read(doc, &["data", "binaryData", "immutable"])?;
        let data = strings(doc, "data")?.into_iter().collect();
        let map = ConfigMap {
            namespace: head.namespace,
            name: head.name,
            labels: head.labels,
            data,
        };
        let key = (map.namespace.clone(), map.name.clone());
        insert_new(&mut self.config_maps, key, map, "ConfigMap")
    }
}

/// Puts `object` (a `kind`) at `key` in `objects`, where none may be yet.
fn insert_new<T>(
    objects: &mut BTreeMap<(String, String), T>,
    key: (String, String),
    object: T,
    kind: &str,
) -> Result<(), Error> {
    if objects.contains_key(&key) {
        return Err(Error::config(format!(
            "the {kind} {}/{} is given twice",
            key.0, key.1
        )));
    }
    objects.insert(key, object);
    Ok(())
}

/// An object's `apiVersion`, `metadata.name`, `metadata.namespace` and
/// `metadata.labels`, its other fields checked against `fields`.
struct Head {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
}

impl Head {
    fn read(doc: &Map<String, Value>, fields: &[&str]) -> Result<Head, Error> {
        match doc.get("apiVersion") {
            Some(Value::String(v)) if v == "v1" => {}
            _ => return Err(Error::config("expected `v1`").at("apiVersion")),
        }
        for key in doc.keys() {
            if !["apiVersion", "kind", "metadata"].contains(&key.as_str())
                && !fields.contains(&key.as_str())
            {
                return Err(Error::config(format!("unknown field `{key}`")));
            }
        }
        let Some(Value::Object(metadata)) = doc.get("metadata") else {
            return Err(Error::config("expected a mapping").at("metadata"));
        };
        let name = match metadata.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            _ => return Err(Error::config("expected a non-empty string").at("metadata.name")),
        };
        let namespace = match metadata.get("namespace") {
            None | Some(Value::Null) => DEFAULT_NAMESPACE.to_owned(),
            Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
            Some(_) => {
                return Err(Error::config("expected a non-empty string").at("metadata.namespace"));
            }
        };
        let labels = match metadata.get("labels") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(labels)) => labels
                .iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k.clone(), v.clone())),
                    _ => Err(Error::config("expected a string").at(format!("metadata.labels.{k}"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Error::config("expected a mapping").at("metadata.labels")),
        };
        Ok(Head {
            namespace,
            name,
            labels,
        })
    }
}

/// The string values of the mapping `field` of `doc` (none: empty).
fn strings(doc: &Map<String, Value>, field: &str) -> Result<Vec<(String, String)>, Error> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => Ok((k.clone(), v.clone())),
                _ => Err(Error::config("expected a string").at(format!("{field}.{k}"))),
            })
            .collect(),
        Some(_) => Err(Error::config("expected a mapping").at(field)),
    }
}
