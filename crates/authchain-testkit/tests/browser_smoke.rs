//! Headless Chromium logs in through the IdP's form and lands back on the
//! app.

#![allow(clippy::unwrap_used)]

mod support;

use authchain_testkit::browser;
use authchain_testkit::idp::{Idp, IdpConfig};
use support::App;

#[tokio::test]
async fn chromium_logs_in_through_the_idp() {
    let app = App::start().await;
    let redirect = app.url("/callback");
    let idp = Idp::start(IdpConfig::single("app", "appsecret", &redirect))
        .await
        .unwrap();
    app.set_authorize_url(idp.authorize_url("app", &redirect, "openid email", "st"));

    let page = browser::login(&app.url("/"), "alice", "alicepwd")
        .await
        .unwrap();
    assert!(page.url.starts_with(&redirect), "{page:?}");
    assert!(page.text.contains("hello "), "{page:?}");
    assert!(!page.text.contains("hello (none)"), "{page:?}");
    assert!(page.text.contains("state st"), "{page:?}");
    assert_eq!(idp.requests().await.unwrap().login, 1);

    let refused = browser::login(&app.url("/"), "alice", "wrong")
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("Invalid username or password"),
        "{refused}"
    );
}
