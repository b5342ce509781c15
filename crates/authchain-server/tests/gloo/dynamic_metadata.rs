//! Identity out to Envoy: what the steps put in the allow's dynamic
//! metadata (a JWT's claims by Gloo's `dynamicMetadataFromClaims`, an OPA
//! policy's `dynamic_metadata`) reaches Envoy's dynamic metadata, under
//! the ext_authz filter's namespace, as Envoy's own access log prints it.

use std::time::{Duration, Instant};

use crate::Stack;
use crate::jwt::{hs256_jwks, token};

#[tokio::test]
async fn claims_and_policy_metadata_reach_envoy_s_dynamic_metadata() {
    let jwks = hs256_jwks().replace('\'', "''");
    let stack = Stack::start(
        &format!(
            r#"authConfigs:
- name: meta
  configs:
  - jwt:
      jwks: {{ local: {{ key: '{jwks}' }} }}
      dynamicMetadataFromClaims: {{ user: sub, email: email }}
  - opaAuth:
      query: data.meta.result
      modules:
        meta.rego: |
          package meta
          import rego.v1
          result := {{"allowed": true, "dynamic_metadata": {{"role": "reader"}}}}
"#
        ),
        &[("/", "meta")],
        |b| {
            b.access_log(
                "seen path=%REQ(:PATH)% user=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:user)% \
                 email=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:email)% \
                 role=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:role)%",
            )
        },
    )
    .await;

    let bearer = format!(
        "Bearer {}",
        token("alice", &[("email", "alice@example.com")])
    );
    let reply = stack
        .get("/meta", &[("authorization", bearer.as_str())])
        .await;
    assert_eq!(reply.status, 200, "{}", stack.authchain.log());
    // A denied request has no metadata to give.
    let reply = stack.get("/denied", &[]).await;
    assert_eq!(reply.status, 401);

    let want = "seen path=/meta user=alice email=alice@example.com role=reader";
    let denied = "seen path=/denied user=- email=- role=-";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = stack.envoy.output();
        if output.contains(want) && output.contains(denied) {
            break;
        }
        assert!(Instant::now() < deadline, "no access log lines: {output}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
