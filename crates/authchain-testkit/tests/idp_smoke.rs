//! The IdP serves discovery, mints opaque and JWT access tokens, and the
//! cookie-keeping client logs in through its form and back to an app.

#![allow(clippy::unwrap_used)]

mod support;

use authchain_testkit::idp::{Idp, IdpClient, IdpConfig, IdpRequests, IdpTtl};
use authchain_testkit::login::{UserAgent, form_urldecode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;
use support::App;

/// The claims of a JWT the IdP signed, checked against its JWKS, issuer
/// and this audience.
async fn verify(idp: &Idp, jwt: &str, audience: &str) -> Value {
    let jwks: JwkSet = serde_json::from_value(idp.jwks().await.unwrap()).unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let key = DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[idp.issuer()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn discovery_and_client_credentials_tokens() {
    let idp = Idp::start(IdpConfig::single(
        "app",
        "appsecret",
        "http://127.0.0.1:1/cb",
    ))
    .await
    .unwrap();
    let issuer = idp.issuer();
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");

    let discovery = idp.discovery().await.unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    for (key, path) in [
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("introspection_endpoint", "/token/introspection"),
        ("userinfo_endpoint", "/me"),
        ("end_session_endpoint", "/session/end"),
        ("revocation_endpoint", "/token/revocation"),
    ] {
        assert_eq!(discovery[key], format!("{issuer}{path}"), "{key}");
    }

    // Opaque: introspection says active, with the scopes asked for.
    let opaque = idp
        .client_credentials("app", "appsecret", "api:read anything", false)
        .await
        .unwrap();
    assert_eq!(opaque.matches('.').count(), 0, "{opaque}");
    let info = idp.introspect("app", "appsecret", &opaque).await.unwrap();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["scope"], "api:read anything", "{info}");
    assert_eq!(info["client_id"], "app", "{info}");
    let bogus = idp.introspect("app", "appsecret", "nope").await.unwrap();
    assert_eq!(bogus["active"], false, "{bogus}");

    // JWT: verifies against the JWKS, audience and scope as asked.
    let jwt = idp
        .client_credentials("app", "appsecret", "api:write", true)
        .await
        .unwrap();
    let claims = verify(&idp, &jwt, "urn:authchain:api").await;
    assert_eq!(claims["scope"], "api:write", "{claims}");
    assert_eq!(claims["client_id"], "app", "{claims}");

    let counts = idp.requests().await.unwrap();
    assert_eq!(
        (
            counts.discovery,
            counts.token,
            counts.introspection,
            counts.jwks
        ),
        (1, 2, 2, 1),
        "{counts:?}"
    );
    idp.reset_requests().await.unwrap();
    assert_eq!(idp.requests().await.unwrap(), IdpRequests::default());
}

#[tokio::test]
async fn the_idp_goes_down_and_comes_back_with_a_new_key() {
    let mut idp = Idp::start(IdpConfig::single(
        "app",
        "appsecret",
        "http://127.0.0.1:1/cb",
    ))
    .await
    .unwrap();
    let issuer = idp.issuer();
    let old = idp.jwks().await.unwrap()["keys"][0]["kid"].clone();
    idp.kill();
    assert!(tokio::net::TcpStream::connect(idp.addr()).await.is_err());
    idp.restart().await.unwrap();
    assert_eq!(idp.issuer(), issuer);
    let new = idp.jwks().await.unwrap()["keys"][0]["kid"].clone();
    assert!(new.is_string() && new != old, "{old} {new}");
}

#[tokio::test]
async fn the_login_client_walks_a_code_flow_and_logout() {
    let app = App::start().await;
    let redirect = app.url("/callback");
    let mut config = IdpConfig::single("app", "appsecret", &redirect);
    config.clients[0].post_logout_redirect_uris = vec![app.url("/logged-out")];
    config.ttl = IdpTtl {
        id_token: Some(5),
        ..IdpTtl::default()
    };
    let idp = Idp::start(config).await.unwrap();
    app.set_authorize_url(idp.authorize_url("app", &redirect, "openid email groups", "xyz"));

    // A wrong password shows the form again, with an error.
    let mut agent = UserAgent::new();
    let refused = agent.login(&app.url("/"), "alice", "wrong").await.unwrap();
    assert_eq!(refused.status, 200);
    assert!(
        refused.text().contains("Invalid username or password"),
        "{}",
        refused.describe()
    );
    assert!(refused.login_form().is_some());

    let mut agent = UserAgent::new();
    let page = agent
        .login(&app.url("/"), "alice", "alicepwd")
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.describe());
    assert!(page.url.starts_with(&redirect), "{}", page.describe());
    let query = form_urldecode(page.url.split_once('?').unwrap().1);
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let code = param("code").unwrap();
    assert_eq!(param("state").as_deref(), Some("xyz"));
    assert_eq!(param("iss"), Some(idp.issuer()));
    assert!(
        page.text().contains(&format!("hello {code}")),
        "{}",
        page.text()
    );
    // The IdP's session cookie is in the jar, for 127.0.0.1 (any port).
    assert!(agent.jar().get("op_session").is_some(), "{:?}", agent.jar());

    // The code gives tokens: an ID token with the scopes' claims and a
    // refresh token (the client has the refresh_token grant).
    let tokens = idp
        .token(
            "app",
            "appsecret",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect),
            ],
        )
        .await
        .unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let claims = verify(&idp, id_token, "app").await;
    assert_eq!(claims["email"], "alice@example.com", "{claims}");
    assert_eq!(
        claims["groups"],
        serde_json::json!(["developers"]),
        "{claims}"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        5,
        "{claims}"
    );
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refreshed = idp
        .token(
            "app",
            "appsecret",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await
        .unwrap();
    assert!(refreshed["id_token"].is_string(), "{refreshed}");
    assert!(refreshed["access_token"].is_string(), "{refreshed}");

    // A second visit rides the IdP session: no form.
    let again = agent.get(&app.url("/")).await.unwrap();
    assert!(again.url.starts_with(&redirect), "{}", again.describe());

    // Logout: a plain form, submitted, back to the app.
    let logout = agent
        .get(&format!(
            "{}/session/end?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
            idp.issuer(),
            app.url("/logged-out")
        ))
        .await
        .unwrap();
    let form = logout.forms().pop().unwrap();
    assert_eq!(form.get("logout"), Some("yes"), "{form:?}");
    let out = agent.submit(&form).await.unwrap();
    assert!(
        out.text().contains("logged out, state bye"),
        "{}",
        out.describe()
    );
    assert!(agent.jar().get("op_session").is_none(), "{:?}", agent.jar());

    let counts = idp.requests().await.unwrap();
    assert_eq!(counts.end_session, 1, "{counts:?}");
    assert_eq!(counts.end_session_confirm, 1, "{counts:?}");
    assert_eq!(counts.token, 2, "{counts:?}");
}

#[tokio::test]
async fn stopping_at_a_hop_and_jwt_access_tokens() {
    let app = App::start().await;
    let redirect = app.url("/callback");
    let idp = Idp::start(IdpConfig::single("app", "appsecret", &redirect).jwt())
        .await
        .unwrap();
    app.set_authorize_url(idp.authorize_url("app", &redirect, "openid api:read", "s1"));

    let mut agent = UserAgent::new();
    let first = agent
        .send(
            http::Method::GET,
            &app.url("/"),
            &[],
            bytes::Bytes::new(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(first.status, 302);
    assert!(first.location().unwrap().starts_with(&idp.issuer()));
    let form_page = agent.follow(&first, 5).await.unwrap();
    assert_eq!(form_page.hops.len(), 3, "{}", form_page.describe());
    let mut form = form_page.login_form().unwrap();
    form.fill_login("alice", "alicepwd").unwrap();
    let page = agent.submit(&form).await.unwrap();
    let query = form_urldecode(page.url.split_once('?').unwrap().1);
    let code = &query.iter().find(|(n, _)| n == "code").unwrap().1;

    let tokens = idp
        .token(
            "app",
            "appsecret",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &redirect),
            ],
        )
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let claims = verify(&idp, access, "urn:authchain:api").await;
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert!(
        claims["scope"].as_str().unwrap().contains("api:read"),
        "{claims}"
    );
}

#[tokio::test]
async fn public_clients_need_pkce_and_secrets_can_be_posted() {
    let app = App::start().await;
    let redirect = app.url("/callback");
    let mut config = IdpConfig::single("app", "appsecret", &redirect);
    config.clients[0].token_endpoint_auth_method = Some("client_secret_post".into());
    config.clients.push(IdpClient::public("spa", &redirect));
    config.ttl.client_credentials = Some(42);
    let idp = Idp::start(config).await.unwrap();

    // client_secret_post: Idp::token posts the secret in the body.
    let tokens = idp
        .token(
            "app",
            "appsecret",
            &[("grant_type", "client_credentials"), ("scope", "x")],
        )
        .await
        .unwrap();
    assert_eq!(tokens["expires_in"], 42, "{tokens}");

    // A public client without a code_challenge is sent back with an error.
    let mut agent = UserAgent::new();
    let page = agent
        .get(&idp.authorize_url("spa", &redirect, "openid", "p"))
        .await
        .unwrap();
    assert!(page.url.starts_with(&redirect), "{}", page.describe());
    assert!(page.url.contains("error=invalid_request"), "{}", page.url);
}
