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

    let basic = "
name: basic
configs:
- basicAuth: { realm: r, htpasswd: 'u:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1' }
cache: { key: [{header: authorization}] }
";

    let opa = "
name: opa
configs:
- opaAuth: { query: data.x.allow, modules: { x.rego: \"package x\\nallow := true\" } }
cache: { key: [{header: authorization}] }
";
    // An `oauth2` login: its session cookie alone would serve the logout
    // (and the callback) a cached allow of the app's pages.
    let login = "
name: login
configs:
- name: login
  oauth2:
    oidcAuthorizationCode:
      appUrl: https://app.example
      callbackPath: /callback
      logoutPath: /logout
      clientId: app
      disableClientSecret: true
      issuerUrl: https://idp.example
      session: { cookieOptions: { notSecure: true } }
cache: { key: KEY }
";
    // (case, config, what its error says; none for a config that builds)
    let cases: [(&str, String, &[&str]); 9] = [
        (
            "an oauth2 login keyed on its session cookie alone",
            login.replace("KEY", "[{cookie: __session}], trustKey: true"),
            &["step 'login' reads the path", "cache.key"],
        ),
        (
            "an oauth2 login without its cookie's parts",
            login.replace("KEY", "[{cookie: __session}, path, host]"),
            &["step 'login' reads cookie `__session.1`"],
        ),
        (
            "an oauth2 login keyed on its cookie, path and host",
            login.replace("KEY", "[{header: cookie}, path, host]"),
            &[],
        ),
        (
            "apiKeyAuth and rules, every read in the key",
            with("false", "[{header: api-key}, method, host, path]"),
            &[],
        ),
        (
            "apiKeyAuth that reads a bearer too",
            with("true", "[{header: api-key}, method, host, path]"),
            &["step 'key' reads header `authorization`"],
        ),
        (
            "rules that read the method",
            with("false", "[{header: api-key}]"),
            &["step 'only-get' reads the method", "cache.key"],
        ),
        ("basicAuth", basic.to_owned(), &[]),
        (
            "opaAuth, which may read anything",
            opa.to_owned(),
            &["does not declare", "trustKey"],
        ),
        (
            "opaAuth with trustKey",
            opa.replace("}] }", "}], trustKey: true }"),
            &[],
        ),
    ];
    for (name, config, want) in cases {
        match build(&config) {
            Ok(()) => assert!(want.is_empty(), "case {name}: builds"),
            Err(e) => {
                assert!(!want.is_empty(), "case {name}: {e}");
                for part in want {
                    assert!(e.contains(part), "case {name}: {part} in {e}");
                }
            }
        }
    }
}
