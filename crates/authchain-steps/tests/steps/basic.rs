//! `basicAuth`.

use authchain_core::{Answer, AuthService, Decision};
use authchain_steps::basic::{BasicAuth, BasicConfig};
use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};

use crate::common::*;

const SHA256_USER: &str = "$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC."; // password
const SHA512_USER: &str = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn bcrypt_2y(password: &str) -> String {
    let h = bcrypt::hash(password, 4).unwrap();
    format!("$2y${}", &h[4..])
}

fn config() -> String {
    format!(
        r#"
name: b
configs:
- basicAuth:
    realm: ratings
    userIdHeader: x-user-id
    htpasswd: |
      # comment
      alice:{bcrypt}
      bob:{SHA512_USER}
      carol:{SHA256_USER}
    apr:
      users:
        user: {{ salt: TYu6jVnr, hashedPassword: ZMc4.dAY/srWCwfeAr0sc1 }}
"#,
        bcrypt = bcrypt_2y("alice-pw"),
    )
}

#[tokio::test]
async fn every_hash_scheme_verifies() {
    let chain = chain(&config()).await;
    for (user, pw) in [
        ("alice", "alice-pw"),
        ("bob", "password"),
        ("carol", "password"),
        ("user", "password"),
    ] {
        let mut r = get_with("/", "authorization", &basic(user, pw));
        let d = chain.authorize(&mut r).await;
        assert!(d.is_allow(), "{user}: {d:?}");
        assert_eq!(upstream(&d, "x-user-id").as_deref(), Some(user));
        assert_eq!(
            d.as_allow().unwrap().user_info.as_ref().unwrap().user_id,
            user
        );
        assert_eq!(r.state["basicAuth"]["user"], user);
    }
}

#[tokio::test]
async fn bad_credentials_get_a_401_with_the_realm() {
    let chain = chain(&config()).await;
    let huge = "A".repeat(100_000);
    let non_utf8 = base64::engine::general_purpose::STANDARD.encode(b"\xff\xfe:password");
    let basic_header = |value: &str| get_with("/", "authorization", value);
    let cases = [
        ("no credential", req(Method::GET, "/")),
        ("a wrong password", basic_header(&basic("alice", "wrong"))),
        ("an empty password", basic_header(&basic("alice", ""))),
        (
            "an unknown user",
            basic_header(&basic("nobody", "password")),
        ),
        ("an empty user", basic_header(&basic("", "password"))),
        ("not base64", basic_header("Basic !!!not-base64!!!")),
        ("no colon", basic_header("Basic dXNlcnBhc3N3b3Jk")),
        (
            "a user under Bearer",
            basic_header("Bearer dXNlcjpwYXNzd29yZA=="),
        ),
        ("Basic alone", basic_header("Basic")),
        ("huge", basic_header(&format!("Basic {huge}"))),
        (
            "a user not UTF-8",
            basic_header(&format!("Basic {non_utf8}")),
        ),
        (
            "a header not UTF-8",
            req(Method::GET, "/").with_header(
                HeaderName::from_static("authorization"),
                HeaderValue::from_bytes(b"Basic \xff\xff").unwrap(),
            ),
        ),
    ];
    for (name, mut r) in cases {
        let d = chain.authorize(&mut r).await;
        let deny = d.as_deny().unwrap_or_else(|| panic!("case {name}: {d:?}"));
        assert_eq!(deny.status, 401, "case {name}");
        assert_eq!(
            deny.headers["www-authenticate"], "Basic realm=\"ratings\", charset=\"UTF-8\"",
            "case {name}"
        );
    }
}

#[tokio::test]
async fn a_verified_user_is_cached_and_a_wrong_password_is_not() {
    let config: BasicConfig = serde_json::from_value(serde_json::json!({
        "htpasswd": format!("alice:{}\n", bcrypt_2y("alice-pw")),
    }))
    .unwrap();
    let step = BasicAuth::new(config).unwrap();
    assert!(!step.is_cached("alice", b"alice-pw"));
    // A password to verify waits for `authorize` (the hash runs on the
    // blocking pool); a malformed credential is answered at once.
    let mut r = get_with("/", "authorization", &basic("alice", "alice-pw"));
    assert!(matches!(step.authorize(&mut r), Answer::Wait(_)));
    let mut bad = get_with("/", "authorization", "Basic !!!");
    let Answer::Ready(answer) = step.authorize(&mut bad) else {
        panic!("a malformed credential is answered at once");
    };
    assert!(!answer.unwrap().is_allow());
    // So is a password longer than any hash is asked to take (APR1's and
    // SHA-crypt's work grows with it), of a user or not.
    for user in ["alice", "nobody"] {
        let long = "p".repeat(1025);
        let mut r = get_with("/", "authorization", &basic(user, &long));
        let Answer::Ready(answer) = step.authorize(&mut r) else {
            panic!("a {}-byte password is answered at once", long.len());
        };
        assert!(!answer.unwrap().is_allow());
    }
    assert!(step.authorize(&mut r).await.unwrap().is_allow());
    assert!(step.is_cached("alice", b"alice-pw"));
    // The second answer comes from the cache, at once, and is the same.
    let mut r = get_with("/", "authorization", &basic("alice", "alice-pw"));
    let Answer::Ready(answer) = step.authorize(&mut r) else {
        panic!("a cached credential is answered at once");
    };
    assert!(answer.unwrap().is_allow());
    let mut r = get_with("/", "authorization", &basic("alice", "alice-pw"));
    let d = step.authorize(&mut r).await.unwrap();
    assert!(matches!(d, Decision::Allow(_)));
    let mut r = get_with("/", "authorization", &basic("alice", "nope"));
    assert!(!step.authorize(&mut r).await.unwrap().is_allow());
    assert!(!step.is_cached("alice", b"nope"));
    assert!(step.identity_headers().is_empty());
}

#[tokio::test]
async fn bad_basic_configs_name_their_place_and_hide_hashes() {
    let cases = [
        ("realm: x", "configs[0].basicAuth"),
        (
            "htpasswd: \"a:$2y$05$abc\"",
            "configs[0].basicAuth.htpasswd",
        ),
        (
            "htpasswd: \"a:{SHA}s3cr3t\"",
            "configs[0].basicAuth.htpasswd",
        ),
        (
            "htpasswd: \"no-colon-s3cr3t\"",
            "configs[0].basicAuth.htpasswd",
        ),
        (
            "htpasswd: \"a:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\\na:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\"",
            "configs[0].basicAuth.htpasswd",
        ),
        (
            "apr: { users: { bob: { salt: s3cr3t, hashedPassword: short } } }",
            "configs[0].basicAuth.apr.users.bob",
        ),
        (
            "apr: { users: { bob: { salt: x } } }",
            "configs[0].basicAuth.apr.users.bob",
        ),
        (
            "htpasswdFile: /nonexistent/htpasswd",
            "configs[0].basicAuth.htpasswdFile",
        ),
        (
            "encryption: { sha1: {} }\n    userList: { users: { bob: { salt: s3cr3t, hashedPassword: 010eb058a59f4ac5ba05639b0263cf91b4345fdZ } } }",
            "configs[0].basicAuth.userList.users.bob",
        ),
        (
            "encryption: { sha1: {} }\n    userList: { users: { bob: { salt: s3cr3t, hashedPassword: 010eb0 } } }",
            "configs[0].basicAuth.userList.users.bob",
        ),
        (
            "encryption: { sha1: {} }\n    userList: { users: { bob: { salt: s3cr3t, hashedPassword: '+10eb058a59f4ac5ba05639b0263cf91b4345fd6' } } }",
            "configs[0].basicAuth.userList.users.bob",
        ),
        (
            "encryption: { sha1: {}, apr: {} }\n    userList: { users: { bob: { salt: s3cr3t, hashedPassword: x } } }",
            "configs[0].basicAuth.encryption",
        ),
        ("encryption: { sha1: {} }", "configs[0].basicAuth"),
        (
            "userList: { users: { bob: { salt: s3cr3t, hashedPassword: x } } }",
            "configs[0].basicAuth",
        ),
        (
            "apr: { users: { a: { salt: TYu6jVnr, hashedPassword: ZMc4.dAY/srWCwfeAr0sc1 } } }\n    encryption: { apr: {} }\n    userList: { users: { b: { salt: TYu6jVnr, hashedPassword: ZMc4.dAY/srWCwfeAr0sc1 } } }",
            "configs[0].basicAuth",
        ),
        (
            "htpasswd: \"a:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\"\n    realm: 'a\"b'",
            "configs[0].basicAuth.realm",
        ),
        (
            "htpasswd: \"a:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\"\n    userIdHeader: 'x y'",
            "configs[0].basicAuth.userIdHeader",
        ),
        (
            "htpasswd: \"a:$apr1$TYu6jVnr$ZMc4.dAY/srWCwfeAr0sc1\"\n    cache: { ttl: forever }",
            "configs[0].basicAuth.cache.ttl",
        ),
    ];
    for (block, place) in cases {
        let yaml = format!("name: b\nconfigs:\n- basicAuth:\n    {block}\n");
        assert_bad_config(&yaml, place, &["s3cr3t"]).await;
    }
    let e = load_error("name: b\nconfigs:\n- basicAuth:\n    htpasswd: \"# c\\na:{SHA}x\"\n").await;
    assert!(
        e.to_string().contains("line 2: unsupported hash scheme"),
        "{e}"
    );
}

#[tokio::test]
async fn gloo_s_extended_shape_with_its_own_examples() {
    // Gloo's basic auth guide: user `user`, password `password`.
    let cases = [
        ("apr", "TYiryv0/", "8BvzLUO9IfGPGGsPnAgSu1"),
        (
            "sha1",
            "TYiryv0/",
            "010eb058a59f4ac5ba05639b0263cf91b4345fd6",
        ),
        // The hex digits in either case.
        (
            "sha1",
            "TYiryv0/",
            "010EB058A59F4AC5BA05639B0263CF91B4345FD6",
        ),
    ];
    for (algorithm, salt, hash) in cases {
        let chain = chain(&format!(
            "name: b\nconfigs:\n- basicAuth:\n    encryption: {{ {algorithm}: {{}} }}\n    userList:\n      users:\n        user: {{ salt: '{salt}', hashedPassword: '{hash}' }}\n"
        ))
        .await;
        let good = basic("user", "password");
        for header in ["authorization", "proxy-authorization"] {
            let mut r = get_with("/", header, &good);
            let d = chain.authorize(&mut r).await;
            assert!(d.is_allow(), "case {algorithm} {hash} in {header}: {d:?}");
            // A credential for this hop does not go upstream.
            assert!(
                r.headers.get("proxy-authorization").is_none(),
                "case {algorithm}"
            );
            assert!(
                d.as_allow()
                    .unwrap()
                    .headers_to_remove
                    .iter()
                    .any(|h| h == "proxy-authorization"),
                "case {algorithm}"
            );
        }
        for (name, credential) in [
            ("a wrong password", basic("user", "passwore")),
            ("the salt as the password", basic("user", salt)),
            ("another user", basic("other", "password")),
        ] {
            let mut r = get_with("/", "authorization", &credential);
            let d = chain.authorize(&mut r).await;
            assert_eq!(status(&d), 401, "case {algorithm}: {name}");
        }
        // Proxy-Authorization is read only when Authorization is absent,
        // and verified like it.
        let wrong = basic("user", "wrong");
        let cases = [
            ("a wrong password in it", None, Some(wrong.as_str())),
            (
                "a wrong Authorization",
                Some(wrong.as_str()),
                Some(good.as_str()),
            ),
            (
                "a Bearer Authorization",
                Some("Bearer abc"),
                Some(good.as_str()),
            ),
        ];
        for (name, authorization, proxy) in cases {
            let mut r = req(Method::GET, "/");
            for (header, value) in [
                ("authorization", authorization),
                ("proxy-authorization", proxy),
            ] {
                if let Some(value) = value {
                    r.headers.insert(
                        HeaderName::from_static(header),
                        HeaderValue::from_str(value).unwrap(),
                    );
                }
            }
            let d = chain.authorize(&mut r).await;
            assert_eq!(status(&d), 401, "case {algorithm}: {name}");
        }
    }

    // The older shapes read Authorization only, as before.
    let chain = chain(&config()).await;
    let mut r = get_with("/", "proxy-authorization", &basic("user", "password"));
    assert_eq!(status(&chain.authorize(&mut r).await), 401);
}
