//! The steps declare what they read, so a decision cache over them is
//! checked: a key that misses an attribute is a config error.

use authchain_core::{AuthConfig, Format, PluginRegistry};

fn build(yaml: &str) -> Result<(), String> {
    let mut registry = PluginRegistry::new();
    authchain_steps::register(&mut registry);
    let config = AuthConfig::parse("cache.yaml", yaml, Format::Yaml).unwrap();
    config[0]
        .build(&registry)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn declared_reads_must_be_in_the_key() {
    let keys = "
name: keys
configs:
- name: key
  apiKeyAuth: { headerName: api-key, allowBearer: BEARER, keys: [{ key: k1 }] }
- name: only-get
  rules: { defaultAction: deny, rules: [{ action: allow, methods: [GET] }] }
cache: { key: KEY }
";
    let with = |bearer: &str, key: &str| keys.replace("BEARER", bearer).replace("KEY", key);
    assert_eq!(
        build(&with("false", "[{header: api-key}, method, host, path]")),
        Ok(())
    );
    let e = build(&with("true", "[{header: api-key}, method, host, path]")).unwrap_err();
    assert!(e.contains("step 'key' reads header `authorization`"), "{e}");
    let e = build(&with("false", "[{header: api-key}]")).unwrap_err();
    assert!(e.contains("step 'only-get' reads the method"), "{e}");
    assert!(e.contains("cache.key"), "{e}");

    let basic = "
name: basic
configs:
- basicAuth: { realm: r, htpasswd: 'u:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1' }
cache: { key: [{header: authorization}] }
";
    assert_eq!(build(basic), Ok(()));

    let opa = "
name: opa
configs:
- opaAuth: { query: data.x.allow, modules: { x.rego: \"package x\\nallow := true\" } }
cache: { key: [{header: authorization}] }
";
    let e = build(opa).unwrap_err();
    assert!(
        e.contains("does not declare") && e.contains("trustKey"),
        "{e}"
    );
    assert_eq!(build(&opa.replace("}] }", "}], trustKey: true }")), Ok(()));
}
