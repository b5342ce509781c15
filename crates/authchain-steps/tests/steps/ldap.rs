//! `ldap` against a real OpenLDAP slapd with Gloo's guide directory (and a
//! few entries of our own), started by the testkit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use authchain_testkit::slapd::{Directory, GLOO_GUIDE_LDIF, Slapd};
use base64::Engine as _;
use http::Method;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::common::*;

const ACCESS: &str = r#"access to attrs=userPassword by self write by anonymous auth by * none
access to dn.subtree="ou=people,dc=solo,dc=io" by dn.exact="uid=nora,ou=people,dc=solo,dc=io" none by * read
access to * by * read"#;

/// Gloo's LDAP guide's directory, and: `nora`, who may not read her own
/// entry (only a service account sees her groups); `dev,ops` and
/// `par(en)`, whose names need RFC 4514 and RFC 4515 escaping; `cn=reader`,
/// the service account. The three people are managers.
fn ldif() -> String {
    let mut ldif = GLOO_GUIDE_LDIF.to_owned();
    ldif.push_str(
        "
dn: uid=nora,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Nora
sn: N
uid: nora
userPassword: norapwd

dn: uid=dev\\,ops,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Dev Ops
sn: Ops
uid: dev,ops
userPassword: devopspwd

dn: uid=par(en),ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Paren
sn: Paren
uid: par(en)
userPassword: parenpwd

dn: uid=ext-rick,ou=people,dc=solo,dc=io
objectClass: inetOrgPerson
cn: Ext Rick
sn: Rick
uid: ext-rick
userPassword: extpwd

dn: cn=reader,dc=solo,dc=io
objectClass: inetOrgPerson
cn: reader
sn: reader
userPassword: readerpwd

dn: cn=managers,ou=groups,dc=solo,dc=io
changetype: modify
add: member
member: uid=nora,ou=people,dc=solo,dc=io
member: uid=dev\\,ops,ou=people,dc=solo,dc=io
member: uid=par(en),ou=people,dc=solo,dc=io
",
    );
    ldif
}

async fn directory(tls: Option<(&str, &str)>) -> Slapd {
    Slapd::start(&Directory {
        suffix: "dc=solo,dc=io",
        admin_password: "solopwd",
        access: ACCESS,
        // A bind with a DN and no password is an anonymous success here,
        // as on many directories.
        allow: &["bind_anon_dn"],
        ldif: &ldif(),
        tls,
        password_policy: None,
    })
    .await
    .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Gloo's guide fields: users under `ou=people`, managers allowed.
const GUIDE: &str = "    userDnTemplate: \"uid=%s,ou=people,dc=solo,dc=io\"
    allowedGroups:
    - \"cn=managers,ou=groups,dc=solo,dc=io\"";

/// An AuthConfig of one `ldap` step at `address` with `fields` (indented
/// under `ldap:`), then `more` documents. A failing step answers 503, so
/// that an error is told from a deny.
fn step(address: &str, fields: &str, more: &str) -> String {
    format!(
        "apiVersion: enterprise.gloo.solo.io/v1\nkind: AuthConfig\nmetadata: {{ name: ldap, namespace: gloo-system }}\nspec:\n  statusOnError: 503\n  configs:\n  - ldap:\n      address: \"{address}\"\n{fields}\n{more}",
        fields = fields
            .replace("\n    ", "\n      ")
            .replacen("    ", "      ", 1)
    )
}

/// [`GUIDE`]'s step with `extra` fields.
fn config(address: &str, extra: &str, more: &str) -> String {
    step(address, &format!("{GUIDE}\n{extra}"), more)
}

async fn status_of(chain: &authchain_core::Chain, user: &str, password: &str) -> u16 {
    let mut r = get_with("/echo", "authorization", &basic(user, password));
    status(&chain.authorize(&mut r).await)
}

/// The fields that read the groups as the service account of
/// [`account`]'s Secret.
const LOOKUP: &str = "    groupLookupSettings:
      checkGroupsWithServiceAccount: true
      credentialsSecretRef: { name: ldapcredentials, namespace: gloo-system }";

/// The Secret of the service account `cn=reader`, with `password`.
fn account(password: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Secret
type: extauth.solo.io/accountcredentials
metadata: {{ name: ldapcredentials, namespace: gloo-system }}
stringData: {{ username: 'cn=reader,dc=solo,dc=io', password: {password} }}
"
    )
}

#[tokio::test]
async fn gloo_guide_users_and_groups() {
    let slapd = directory(None).await;
    let address = format!("ldap://{}", slapd.addr());
    let chain = chain(&config(
        &address,
        "    searchFilter: \"(objectClass=*)\"",
        "",
    ))
    .await;

    // No credentials: 401 with a Basic challenge.
    let d = chain.authorize(&mut req(Method::GET, "/echo")).await;
    assert_eq!(status(&d), 401);
    assert_eq!(
        d.as_deny()
            .unwrap()
            .headers
            .get("www-authenticate")
            .unwrap(),
        "Basic realm=\"authchain\""
    );
    for (case, user, password, expected) in [
        ("a manager", "rick", "rickpwd", 200),
        ("a developer only", "marco", "marcopwd", 403),
        ("an unknown user", "john", "doe", 401),
        ("a wrong password", "rick", "marcopwd", 401),
        // slapd lets a DN with no password bind as anonymous, who may
        // read rick's groups: the step never asks.
        ("an empty password", "rick", "", 401),
        ("a password with a NUL", "rick", "rickpwd\0", 401),
        ("a DN-special name, escaped", "dev,ops", "devopspwd", 200),
        (
            "the service account is no person",
            "reader",
            "readerpwd",
            401,
        ),
    ] {
        assert_eq!(status_of(&chain, user, password).await, expected, "{case}");
    }

    // What an allow leaves for later steps, named as the directory
    // spells the user, however the client spelled it.
    for spelling in ["rick", "RICK", "\u{ff52}\u{ff49}\u{ff43}\u{ff4b}"] {
        let mut r = get_with("/echo", "authorization", &basic(spelling, "rickpwd"));
        let d = chain.authorize(&mut r).await;
        let Some(allow) = d.as_allow() else {
            // A directory that does not fold full-width letters refuses.
            assert_eq!(status(&d), 401, "{spelling}");
            continue;
        };
        assert_eq!(
            allow.user_info.as_ref().unwrap().user_id,
            "rick",
            "{spelling}"
        );
        let state = r.state.get("ldap").unwrap();
        assert_eq!(state["user"], "rick", "{spelling}");
        assert_eq!(
            state["dn"], "uid=rick,ou=people,dc=solo,dc=io",
            "{spelling}"
        );
        let groups = state["groups"].as_array().unwrap();
        assert!(
            groups
                .iter()
                .any(|g| g == "cn=managers,ou=groups,dc=solo,dc=io")
        );
    }
}

#[tokio::test]
async fn names_cannot_inject_into_the_dn_or_the_filter() {
    let slapd = directory(None).await;
    let address = format!("ldap://{}", slapd.addr());
    // The filter names the user too: `par(en)` must reach it escaped.
    let chain = chain(&config(&address, "    searchFilter: \"(uid=%s)\"", "")).await;
    assert_eq!(status_of(&chain, "par(en)", "parenpwd").await, 200);
    assert_eq!(status_of(&chain, "dev,ops", "devopspwd").await, 200);
    // Each with rick's password: none binds as rick, nor as anyone.
    for hostile in [
        "*",
        "rick)(uid=*",
        "rick,ou=people,dc=solo,dc=io",
        "rick+cn=x",
        "rick\\",
        "rick\0",
        "#rick",
        " rick",
        "rick ",
        "cn=admin,dc=solo,dc=io",
        "\u{e9}",
        &"r".repeat(5000),
    ] {
        let status = status_of(&chain, hostile, "rickpwd").await;
        assert_eq!(status, 401, "{hostile:?}");
    }
    // The admin's own password, any name: 401.
    assert_eq!(status_of(&chain, "admin", "solopwd").await, 401);
}

#[tokio::test]
async fn group_checking_service_accounts_and_filters() {
    let slapd = directory(None).await;
    let address = format!("ldap://{}", slapd.addr());

    // nora may not read her own groups: 403, unless the service account reads them.
    let own = chain(&config(&address, "", "")).await;
    assert_eq!(status_of(&own, "nora", "norapwd").await, 403);
    let service = chain(&config(&address, LOOKUP, &account("readerpwd"))).await;
    for (user, password, expected) in [
        ("nora", "norapwd", 200),
        ("nora", "wrong", 401),
        ("marco", "marcopwd", 403),
    ] {
        assert_eq!(
            status_of(&service, user, password).await,
            expected,
            "{user}"
        );
    }
    // A service account the directory refuses: the step fails (503), even
    // with failureModeAllow, which would let marco past the group check.
    let refused = config(&address, LOOKUP, &account("wrong"));
    let fail_open = refused.replace("  - ldap:", "  - failureModeAllow: true\n    ldap:");
    assert_ne!(refused, fail_open);
    for yaml in [refused, fail_open] {
        let refused = chain(&yaml).await;
        assert_eq!(status_of(&refused, "nora", "norapwd").await, 503);
        assert_eq!(status_of(&refused, "marco", "marcopwd").await, 503);
    }

    // disableGroupChecking: every user who binds.
    let anyone = chain(&config(&address, "    disableGroupChecking: true", "")).await;
    assert_eq!(status_of(&anyone, "marco", "marcopwd").await, 200);
    assert_eq!(status_of(&anyone, "marco", "wrong").await, 401);
    // `%s` inside the first RDN's value: the user is named as the entry
    // spells the part `%s` matched, however the client spelled it.
    let external = chain(&step(
        &address,
        "    userDnTemplate: \"uid=ext-%s,ou=people,dc=solo,dc=io\"\n    disableGroupChecking: true",
        "",
    ))
    .await;
    for spelling in ["rick", "RICK"] {
        let mut r = get_with("/echo", "authorization", &basic(spelling, "extpwd"));
        let d = external.authorize(&mut r).await;
        let allow = d.as_allow().unwrap_or_else(|| panic!("{spelling}: {d:?}"));
        assert_eq!(
            allow.user_info.as_ref().unwrap().user_id,
            "rick",
            "{spelling}"
        );
        assert_eq!(r.state["ldap"]["user"], "rick", "{spelling}");
    }
    // A filter the entry does not match: 403.
    let filtered = chain(&config(
        &address,
        "    searchFilter: \"(objectClass=posixAccount)\"",
        "",
    ))
    .await;
    assert_eq!(status_of(&filtered, "rick", "rickpwd").await, 403);
    // The allowed group spelled otherwise is the same group.
    let spelled = step(
        &address,
        "    userDnTemplate: \"uid=%s,ou=people,dc=solo,dc=io\"
    allowedGroups: [\"CN=Managers, OU=Groups, DC=solo, DC=io\"]",
        "",
    );
    let spelled = chain(&spelled).await;
    assert_eq!(status_of(&spelled, "rick", "rickpwd").await, 200);
    assert_eq!(status_of(&spelled, "marco", "marcopwd").await, 403);
    // Another membership attribute: rick has no `description` groups.
    let other = chain(&config(
        &address,
        "    membershipAttributeName: description",
        "",
    ))
    .await;
    assert_eq!(status_of(&other, "rick", "rickpwd").await, 403);
}

/// A password an administrator set must be changed by its user first
/// (OpenLDAP's `ppolicy` with `pwdMustChange`): the directory takes it and
/// says so in its password policy control, and the step answers 401, as
/// for a wrong password, whoever reads the groups. The directory refuses
/// the user's own search then (a 403 without the control), but not a
/// service account's (a 200 without it). Once the user changed it, the new
/// one passes. A service account's password to change is a step error.
#[tokio::test]
async fn a_password_to_change_after_a_reset_is_a_401() {
    let mut ldif = ldif();
    ldif.push_str(
        "
dn: ou=policies,dc=solo,dc=io
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,dc=solo,dc=io
objectClass: pwdPolicy
objectClass: device
cn: default
pwdAttribute: userPassword
pwdMustChange: TRUE

dn: uid=rick,ou=people,dc=solo,dc=io
changetype: modify
replace: userPassword
userPassword: resetpwd
",
    );
    let slapd = Slapd::start(&Directory {
        suffix: "dc=solo,dc=io",
        admin_password: "solopwd",
        access: ACCESS,
        ldif: &ldif,
        password_policy: Some("cn=default,ou=policies,dc=solo,dc=io"),
        ..Directory::default()
    })
    .await
    .unwrap();
    let address = format!("ldap://{}", slapd.addr());
    let unchecked = chain(&config(&address, "    disableGroupChecking: true", "")).await;
    let service = chain(&config(&address, LOOKUP, &account("readerpwd"))).await;
    for chain in [&unchecked, &service] {
        assert_eq!(status_of(chain, "rick", "resetpwd").await, 401);
        assert_eq!(status_of(chain, "rick", "rickpwd").await, 401);
        // Users whose password no admin set pass.
        assert_eq!(status_of(chain, "dev,ops", "devopspwd").await, 200);
    }
    // rick sets his own.
    let rick = "uid=rick,ou=people,dc=solo,dc=io";
    let (connection, mut ldap) = ldap3::LdapConnAsync::new(&address).await.unwrap();
    ldap3::drive!(connection);
    ldap.simple_bind(rick, "resetpwd")
        .await
        .unwrap()
        .success()
        .unwrap();
    let new = std::collections::HashSet::from(["rick-chose-this"]);
    let changed = ldap.modify(rick, vec![ldap3::Mod::Replace("userPassword", new)]);
    changed.await.unwrap().success().unwrap();
    for chain in [&unchecked, &service] {
        assert_eq!(status_of(chain, "rick", "rick-chose-this").await, 200);
    }
    // The admin sets the service account's password (the same one): its
    // search would find no one, every user's 403; it is a step error.
    let (connection, mut admin) = ldap3::LdapConnAsync::new(&address).await.unwrap();
    ldap3::drive!(connection);
    let admin_dn = "cn=admin,dc=solo,dc=io";
    admin
        .simple_bind(admin_dn, "solopwd")
        .await
        .unwrap()
        .success()
        .unwrap();
    let same = std::collections::HashSet::from(["readerpwd"]);
    let reset = admin.modify(
        "cn=reader,dc=solo,dc=io",
        vec![ldap3::Mod::Replace("userPassword", same)],
    );
    reset.await.unwrap().success().unwrap();
    assert_eq!(status_of(&service, "rick", "rick-chose-this").await, 503);
    assert_eq!(status_of(&unchecked, "rick", "rick-chose-this").await, 200);
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM,
/// key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn ldaps_and_start_tls_verify_the_directory() {
    let (ca, cert, key) = certificates();
    let (other_ca, ..) = certificates();
    let slapd = directory(Some((&cert, &key))).await;
    let ldaps = format!("ldaps://{}", slapd.ldaps_addr().unwrap());
    let plain = format!("ldap://{}", slapd.addr());
    let tls = |ca: &str, start: bool| {
        let ca = ca.replace('\n', "\n        ");
        format!("    tls:\n      startTls: {start}\n      caPem: |\n        {ca}")
    };
    for (case, address, extra, expected) in [
        ("ldaps with its CA", &ldaps, tls(&ca, false), 200),
        ("StartTLS with its CA", &plain, tls(&ca, true), 200),
        ("ldaps with another CA", &ldaps, tls(&other_ca, false), 503),
        (
            "StartTLS with another CA",
            &plain,
            tls(&other_ca, true),
            503,
        ),
        // Mozilla's roots do not know a test CA.
        ("ldaps with the default roots", &ldaps, String::new(), 503),
    ] {
        let chain = chain(&config(address, &extra, "")).await;
        assert_eq!(
            status_of(&chain, "rick", "rickpwd").await,
            expected,
            "{case}"
        );
    }
}

/// A TCP forwarder to `target` that counts the connections it accepts and
/// cuts them all when `cut` is notified.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(Notify::new());
    let (count, cutter) = (accepted.clone(), cut.clone());
    tokio::spawn(async move {
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut stop = tx.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = stop.recv() => {}
                        }
                    });
                }
                () = cutter.notified() => { let _ = tx.send(()); }
            }
        }
    });
    (addr, accepted, cut)
}

#[tokio::test]
async fn connections_are_pooled_and_stale_ones_replaced() {
    let slapd = directory(None).await;
    let (proxy, accepted, cut) = counting_proxy(slapd.addr()).await;
    let engine = load(&config(
        &format!("ldap://{proxy}"),
        "    pool: { maxSize: 2, initialSize: 2 }",
        "",
    ))
    .await
    .unwrap();
    let generation = engine.current();
    let chain = generation.chain(generation.names()[0]).unwrap();
    // Started: the pool's first two connections open (in the background).
    for _ in 0..250 {
        if accepted.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    for _ in 0..20 {
        assert_eq!(status_of(chain, "rick", "rickpwd").await, 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one after another: reused"
    );

    // Eight at once: new connections on the fly, two kept after.
    let burst = (0..8).map(|_| status_of(chain, "rick", "rickpwd"));
    for status in futures::future::join_all(burst).await {
        assert_eq!(status, 200);
    }
    let after_burst = accepted.load(Ordering::SeqCst);
    assert!(after_burst > 2, "{after_burst}");
    for _ in 0..10 {
        assert_eq!(status_of(chain, "rick", "rickpwd").await, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), after_burst);

    // With maxConnections: 2, a burst waits for the two places.
    let (proxy2, accepted2, _) = counting_proxy(slapd.addr()).await;
    let bounded = crate::common::chain(&config(
        &format!("ldap://{proxy2}"),
        "    pool: { maxSize: 2, initialSize: 0 }\n    maxConnections: 2",
        "",
    ))
    .await;
    let burst = (0..8).map(|_| status_of(&bounded, "rick", "rickpwd"));
    for status in futures::future::join_all(burst).await {
        assert_eq!(status, 200);
    }
    assert_eq!(
        accepted2.load(Ordering::SeqCst),
        2,
        "never more than two open"
    );

    // The directory side closes every connection: the next requests are
    // answered on new ones, none fails.
    cut.notify_one();
    for _ in 0..5 {
        assert_eq!(status_of(chain, "rick", "rickpwd").await, 200);
    }
    assert!(accepted.load(Ordering::SeqCst) > after_burst);
}

#[tokio::test]
async fn a_directory_down_or_silent_fails_closed() {
    // Down: nothing listens.
    let port = authchain_testkit::free_port().unwrap();
    let down = chain(&config(&format!("ldap://127.0.0.1:{port}"), "", "")).await;
    assert_eq!(status_of(&down, "rick", "rickpwd").await, 503);

    // Silent: accepts, never answers; the step's timeout ends the wait.
    let addr = authchain_testkit::silent_server().await.unwrap();
    let silent = chain(&config(
        &format!("ldap://{addr}"),
        "    timeout: 200ms\n    pool: { initialSize: 0 }",
        "",
    ))
    .await;
    assert_eq!(status_of(&silent, "rick", "rickpwd").await, 503);

    // The directory goes away after serving: fail closed.
    let mut slapd = directory(None).await;
    let chain = chain(&config(&format!("ldap://{}", slapd.addr()), "", "")).await;
    assert_eq!(status_of(&chain, "rick", "rickpwd").await, 200);
    slapd.kill();
    assert_eq!(status_of(&chain, "rick", "rickpwd").await, 503);
}

/// A proxy to `target` that takes one connection, then listens no more.
async fn one_connection_to(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        drop(listener);
        let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
            return;
        };
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    addr
}

/// A pooled connection that closes on the user's bind may have carried
/// the password to a directory that crashed on it: when the new
/// connection then cannot be made, the request fails closed under
/// `failureModeAllow`, however long ago the directory last answered (it
/// was let through as an outage). Only a bind that never left is retried
/// as one.
#[tokio::test]
async fn a_directory_gone_after_it_had_the_password_fails_closed() {
    let crashing = answering_with(vec![49, HANG_UP], true).await;
    let address = one_connection_to(crashing).await;
    let yaml = config(
        &format!("ldap://{address}"),
        "    pool: { initialSize: 0 }\n    timeout: 1s",
        "",
    )
    .replace("  - ldap:", "  - failureModeAllow: true\n    ldap:");
    let chain = chain(&yaml).await;
    assert_eq!(status_of(&chain, "rick", "wrong").await, 401);
    // Past the time within which an answer to another bind says it is up.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(status_of(&chain, "rick", "crash").await, 503);
}

/// A directory whose answer to every bind is `rc`: a stand-in for what
/// slapd cannot be made to say (389-DS answers a locked account with 19,
/// constraint violation).
async fn answering_binds_with(rc: u8) -> SocketAddr {
    answering(vec![rc]).await
}

/// A bind answer [`answering`] never sends: the directory says nothing.
const SILENT: u8 = 255;

/// Another: the directory closes the connection.
const HANG_UP: u8 = 254;

/// A directory that answers a connection's binds with `binds` in turn
/// (the last one from then on; [`SILENT`]: no answer, [`HANG_UP`]: the
/// connection closed), and every search with a search-result reference
/// and then success.
async fn answering(binds: Vec<u8>) -> SocketAddr {
    answering_with(binds, false).await
}

/// [`answering`], the binds in turn across connections when `shared`.
async fn answering_with(binds: Vec<u8>, shared: bool) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let all = Arc::new(std::sync::Mutex::new(binds.clone().into_iter().peekable()));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let own = Arc::new(std::sync::Mutex::new(binds.clone().into_iter().peekable()));
            let binds = if shared { all.clone() } else { own };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    // LDAPMessage: SEQUENCE, its length, then the message id
                    // (INTEGER); a BindRequest is [APPLICATION 0] (0x60).
                    let header = match buf.get(1) {
                        Some(&l) if l < 0x80 => 2,
                        Some(&l) => 2 + usize::from(l & 0x7f),
                        None => return,
                    };
                    let Some(&[0x02, len]) = buf.get(header..header + 2) else {
                        return;
                    };
                    let id = &buf[header..header + 2 + usize::from(len)];
                    let message = |op: &[u8]| {
                        let mut answer = vec![0x30, (id.len() + op.len()) as u8];
                        answer.extend_from_slice(id);
                        answer.extend_from_slice(op);
                        answer
                    };
                    let answer = match (n, buf.get(header + id.len())) {
                        (0, _) => return,
                        // BindRequest, [APPLICATION 0]: BindResponse,
                        // [APPLICATION 1] { resultCode, matchedDN,
                        // diagnosticMessage }.
                        (_, Some(0x60)) => {
                            let rc = {
                                let mut binds = binds.lock().unwrap();
                                match binds.next() {
                                    Some(rc) if binds.peek().is_none() => {
                                        *binds = vec![rc].into_iter().peekable();
                                        rc
                                    }
                                    Some(rc) => rc,
                                    None => return,
                                }
                            };
                            match rc {
                                SILENT => continue,
                                HANG_UP => return,
                                _ => {}
                            }
                            message(&[0x61, 0x07, 0x0a, 0x01, rc, 0x04, 0x00, 0x04, 0x00])
                        }
                        // SearchRequest, [APPLICATION 3]: a
                        // SearchResultReference, [APPLICATION 19], then
                        // SearchResultDone, [APPLICATION 5], success.
                        (_, Some(0x63)) => {
                            let mut both = message(&[
                                0x73, 0x0a, 0x04, 0x08, b'l', b'd', b'a', b'p', b':', b'/', b'/',
                                b'x',
                            ]);
                            both.extend(message(&[
                                0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
                            ]));
                            both
                        }
                        _ => return,
                    };
                    if socket.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The directory's answer to the user's bind refuses the credentials,
/// whatever its code, unless it says the directory cannot answer now:
/// a lockout a client brings about is a 401, not a step error (which
/// `failureModeAllow` would let through).
#[tokio::test]
async fn any_refusal_of_the_user_s_bind_is_a_401() {
    for (rc, want) in [
        (49, 401),
        (19, 401),
        (50, 401),
        (13, 401),
        (51, 503),
        (52, 503),
    ] {
        let addr = answering_binds_with(rc).await;
        let chain = chain(&config(
            &format!("ldap://{addr}"),
            "    pool: { initialSize: 0 }",
            "",
        ))
        .await;
        assert_eq!(status_of(&chain, "rick", "rickpwd").await, want, "rc {rc}");
    }
}

/// After the user's bind, a refused service-account bind (a lockout a
/// client can bring about) fails closed whatever `failureModeAllow`
/// says, and a search answered with a reference instead of the entry is
/// no entry (a 403, not a panic).
#[tokio::test]
async fn after_the_user_s_bind_nothing_fails_open() {
    let lookup = format!("{LOOKUP}\n    pool: {{ initialSize: 0 }}");
    let secret = &account("readerpwd");
    let fail_open = |address: SocketAddr, fields: &str, more: &str| {
        let yaml = config(&format!("ldap://{address}"), fields, more);
        yaml.replace("  - ldap:", "  - failureModeAllow: true\n    ldap:")
    };
    for rc in [19, 49, 51] {
        let locked = answering(vec![0, rc]).await;
        let chain = chain(&fail_open(locked, &lookup, secret)).await;
        assert_eq!(status_of(&chain, "rick", "rickpwd").await, 503, "rc {rc}");
    }
    // The directory accepts the password, then says nothing: the request
    // runs out of time after the bind (here the step's own, shorter than
    // the directory's), which fails closed; so does silence on the user's
    // bind (a directory slow to refuse a password, as a PAM delay makes
    // it, is no outage), a connection closed before the bind's answer (a
    // load balancer that gives up on a slow refusal), and an error code a
    // pass-through bind may answer for its input refuses the credentials.
    // An answer that the directory cannot answer now (unavailable) is
    // an outage, let through; busy fails closed.
    for (binds, want) in [
        (vec![0, SILENT], 503),
        (vec![SILENT], 503),
        (vec![HANG_UP], 503),
        (vec![80], 401),
        (vec![1], 401),
        (vec![52], 200),
        (vec![51], 503),
    ] {
        let slow = answering(binds.clone()).await;
        let yaml = fail_open(slow, &format!("{lookup}\n    timeout: 5s"), secret).replace(
            "failureModeAllow: true\n",
            "failureModeAllow: true\n    timeout: 1s\n",
        );
        assert!(yaml.contains("timeout: 1s"), "{yaml}");
        let chain = chain(&yaml).await;
        assert_eq!(
            status_of(&chain, "rick", "rickpwd").await,
            want,
            "{binds:?}"
        );
    }
    // Unavailable for this bind while it answered another within
    // `timeout`: the directory is up, so it fails closed (as busy always
    // does). The connection the 401 gave back answers the next bind.
    for busy in [51, 52] {
        let flooded = answering(vec![49, busy]).await;
        let yaml = fail_open(flooded, "    pool: { initialSize: 0 }", "");
        let chain = chain(&yaml).await;
        assert_eq!(status_of(&chain, "rick", "wrong").await, 401);
        assert_eq!(status_of(&chain, "rick", "rickpwd").await, 503, "{busy}");
    }
    // What one AuthConfig's step heard counts for another's on the same
    // directory: a flood through a public AuthConfig is no outage for an
    // admin one's failureModeAllow.
    let flooded = answering_with(vec![49, 52], true).await;
    let public = fail_open(flooded, "    pool: { initialSize: 0 }", "");
    let admin = public.replace("name: ldap,", "name: admin,");
    let engine = load(&format!("{public}\n---\n{admin}")).await.unwrap();
    let generation = engine.current();
    let [public, admin] = ["gloo-system.ldap", "gloo-system.admin"]
        .map(|name| generation.chain(name).expect(name).clone());
    assert_eq!(status_of(&public, "rick", "wrong").await, 401);
    assert_eq!(status_of(&admin, "rick", "rickpwd").await, 503);
    // A directory that cannot be reached is an outage, let through.
    let port = authchain_testkit::free_port().unwrap();
    let down = chain(&fail_open(
        ([127, 0, 0, 1], port).into(),
        "    pool: { initialSize: 0 }",
        "",
    ))
    .await;
    assert_eq!(status_of(&down, "rick", "rickpwd").await, 200);
    // Silence on the user's bind past the directory's own `timeout`.
    let slow = answering(vec![SILENT]).await;
    let silent = chain(&fail_open(
        slow,
        "    timeout: 200ms\n    pool: { initialSize: 0 }",
        "",
    ))
    .await;
    assert_eq!(status_of(&silent, "rick", "rickpwd").await, 503);
    let referred = answering(vec![0]).await;
    let chain = chain(&fail_open(referred, "    pool: { initialSize: 0 }", "")).await;
    assert_eq!(status_of(&chain, "rick", "rickpwd").await, 403);
}

/// The connections in use are a flood's to take: a request that has
/// none within half the step's time is turned away (503 here) even with
/// `failureModeAllow`, which lets through only the directory's own
/// failure (here, a TLS handshake it never answers).
#[tokio::test]
async fn every_connection_in_use_never_fails_open() {
    let addr = authchain_testkit::silent_server().await.unwrap();
    let yaml = config(
        &format!("ldaps://{addr}"),
        "    timeout: 5s\n    maxConnections: 1\n    pool: { initialSize: 0, maxSize: 1 }",
        "",
    )
    .replace(
        "  - ldap:",
        "  - failureModeAllow: true\n    timeout: 1s\n    ldap:",
    );
    assert!(yaml.contains("failureModeAllow"), "{yaml}");
    let chain = chain(&yaml).await;
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let chain = chain.clone();
            tokio::spawn(async move { status_of(&chain, "rick", "rickpwd").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for run in runs {
        statuses.push(run.await.unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 503, 503],
        "one waits on the directory, two on it"
    );
}

#[tokio::test]
async fn bad_configs_name_their_field() {
    let secret_missing = "    groupLookupSettings:
      checkGroupsWithServiceAccount: true
      credentialsSecretRef: { name: nothing }";
    let wrong_type = "---
apiVersion: v1
kind: Secret
metadata: { name: creds, namespace: gloo-system }
stringData: { username: u, password: hunter2-secret }
";
    let newline = "---
apiVersion: v1
kind: Secret
type: extauth.solo.io/accountcredentials
metadata: { name: creds, namespace: gloo-system }
stringData: { username: cn=reader, password: \"hunter2-secret\\n\" }
";
    let template = "    userDnTemplate: \"uid=%s,cn=%s\"\n    allowedGroups: [g]";
    let no_group = "    userDnTemplate: \"uid=%s\"\n    allowedGroups: []";
    for (case, yaml, place) in [
        (
            "two placeholders",
            step("ldap.example:389", template, ""),
            "userDnTemplate",
        ),
        (
            "no group allowed",
            step("ldap.example:389", no_group, ""),
            "allowedGroups",
        ),
        (
            "a broken filter",
            config("ldap.example:389", "    searchFilter: \"uid=*\"", ""),
            "searchFilter",
        ),
        (
            "a filter LDAP cannot read",
            config(
                "ldap.example:389",
                "    searchFilter: \"(objectClass)\"",
                "",
            ),
            "searchFilter",
        ),
        (
            "a group that is no DN",
            step(
                "ldap.example:389",
                "    userDnTemplate: \"uid=%s\"\n    allowedGroups: [managers]",
                "",
            ),
            "allowedGroups[0]",
        ),
        (
            "a service account with a stray newline",
            config(
                "ldap.example:389",
                "    groupLookupSettings:
      checkGroupsWithServiceAccount: true
      credentialsSecretRef: { name: creds }",
                newline,
            ),
            "groupLookupSettings.credentialsSecretRef",
        ),
        (
            "a pool that starts above its size",
            config(
                "ldap.example:389",
                "    pool: { maxSize: 1, initialSize: 2 }",
                "",
            ),
            "pool",
        ),
        (
            "a pool no machine holds",
            config("ldap.example:389", "    pool: { maxSize: 4294967295 }", ""),
            "pool.maxSize",
        ),
        (
            "more connections than a pool may hold",
            config("ldap.example:389", "    maxConnections: 100000", ""),
            "maxConnections",
        ),
        (
            "a missing Secret",
            config("ldap.example:389", secret_missing, ""),
            "groupLookupSettings.credentialsSecretRef",
        ),
        (
            "a Secret of another type",
            config(
                "ldap.example:389",
                "    groupLookupSettings:
      checkGroupsWithServiceAccount: true
      credentialsSecretRef: { name: creds }",
                wrong_type,
            ),
            "groupLookupSettings.credentialsSecretRef",
        ),
        (
            "StartTLS over ldaps",
            config(
                "ldaps://ldap.example:636",
                "    tls: { startTls: true }",
                "",
            ),
            "tls.startTls",
        ),
        (
            "a CA without TLS",
            config("ldap://ldap.example:389", "    tls: { caPem: x }", ""),
            "tls",
        ),
        (
            "another scheme",
            config("http://ldap.example", "", ""),
            "address",
        ),
        (
            "an unknown field",
            config("ldap.example:389", "    bindDn: x", ""),
            "ldap",
        ),
    ] {
        let e = load_error(&yaml).await;
        let text = format!("{e} {e:?}");
        assert!(
            e.place().is_some_and(|p| p.contains(place)),
            "{case}: {text}"
        );
        assert!(!text.contains("hunter2"), "{case}: {text}");
    }
}
