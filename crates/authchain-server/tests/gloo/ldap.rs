//! The LDAP manifests of Gloo's guide, behind real Envoy, against a real
//! slapd holding the guide's directory and access rules, answered as the
//! guide's `curl`s are.

use authchain_testkit::ScratchDir;
use authchain_testkit::slapd::{Directory, GLOO_GUIDE_LDIF, Slapd};

use crate::{Stack, manifest_path};

/// The guide's access rules (its `02_acl.ldif`), as `slapd.conf` lines.
const GUIDE_ACCESS: &str = r#"access to attrs=userPassword by self write by anonymous auth by dn.exact="cn=admin,dc=solo,dc=io" write by * none
access to dn.subtree="ou=people,dc=solo,dc=io" by dn.exact="cn=admin,dc=solo,dc=io" write by group.exact="cn=managers,ou=groups,dc=solo,dc=io" write by group.exact="cn=developers,ou=groups,dc=solo,dc=io" read by group.exact="cn=sales,ou=groups,dc=solo,dc=io" read by anonymous auth
access to dn.subtree="ou=groups,dc=solo,dc=io" by dn.exact="cn=admin,dc=solo,dc=io" write by group.exact="cn=managers,ou=groups,dc=solo,dc=io" write by group.exact="cn=developers,ou=groups,dc=solo,dc=io" write"#;

#[tokio::test]
async fn gloo_s_ldap_manifests_answer_as_its_guide_says() {
    let slapd = Slapd::start(&Directory {
        suffix: "dc=solo,dc=io",
        admin_password: "solopwd",
        access: GUIDE_ACCESS,
        ldif: GLOO_GUIDE_LDIF,
        ..Directory::default()
    })
    .await
    .unwrap();
    // The manifests as they are, but for the cluster's address of the
    // directory.
    let dir = ScratchDir::new("gloo-ldap").unwrap();
    let manifests = ["ldap", "ldap-service-account"];
    let mut files = Vec::new();
    for m in manifests {
        let text = std::fs::read_to_string(manifest_path(&format!("{m}.yaml"))).unwrap();
        let text = text.replace(
            "ldap.default.svc.cluster.local:389",
            &slapd.addr().to_string(),
        );
        files.push(dir.write(&format!("{m}.yaml"), &text).unwrap());
    }
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let config = format!("authConfigFiles: [{}]\n", files.join(", "));
    let stack = Stack::for_manifests(&config, &manifests).await;

    // The guide's table: (case, Authorization, status).
    let cases = [
        ("no header", None, 401),
        (
            "an unknown user (john:doe)",
            Some("Basic am9objpkb2U="),
            401,
        ),
        (
            "a developer (marco)",
            Some("Basic bWFyY286bWFyY29wd2Q="),
            403,
        ),
        ("a manager (rick)", Some("Basic cmljazpyaWNrcHdk"), 200),
    ];
    for m in manifests {
        let path = format!("/{m}/echo");
        for (case, authorization, status) in cases {
            let headers: Vec<(&str, &str)> = authorization
                .map(|a| ("authorization", a))
                .into_iter()
                .collect();
            let reply = stack.get(&path, &headers).await;
            assert_eq!(
                reply.status,
                status,
                "{m}: {case}: {}",
                stack.authchain.log()
            );
        }
    }
}
