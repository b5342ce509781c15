//! "Log in with your IdP" (`examples/login/`), as a user runs it: the real
//! `authchain` binary with `authchain.yaml` and the Gloo manifest
//! `app.yaml`, a real OpenID provider (npm `oidc-provider`), the real proxy
//! with the example's config, and a cookie-keeping client that follows
//! redirects and fills the IdP's login form as a browser does.
//!
//! The files' fixed ports (proxy 8080, app 8081, authchain 9001, 9002 and
//! 9091, IdP 9400) become ports chosen at run time.

use authchain_testkit::envoy::Envoy;
use authchain_testkit::idp::{Idp, IdpConfig};
use authchain_testkit::login::UserAgent;
use authchain_testkit::nginx::Nginx;
use authchain_testkit::{EchoServer, EchoedRequest, free_port, workspace_root};

use crate::seed::{ADMIN, APP, GRPC, HTTP, PROXY, Proxy, ports};
use crate::support::Authchain;

/// The IdP's port in the files.
const IDP: u16 = 9400;

fn read(file: &str) -> String {
    let path = workspace_root().join("examples/login").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The example running behind `proxy_file`.
struct Login {
    app: EchoServer,
    idp: Idp,
    authchain: Authchain,
    proxy: Proxy,
    base: String,
}

impl Login {
    async fn start(proxy_file: &str) -> Login {
        let app = EchoServer::start().await.unwrap();
        let proxy_port = free_port().unwrap();
        let base = format!("http://127.0.0.1:{proxy_port}");
        let mut config = IdpConfig::single("app", "app-secret", &format!("{base}/callback"));
        config.clients[0].post_logout_redirect_uris = vec![base.clone()];
        let idp = Idp::start(config).await.unwrap();
        let app_yaml = ports(
            &read("app.yaml"),
            &[
                (PROXY, proxy_port.to_string()),
                (IDP, idp.addr().port().to_string()),
            ],
        );
        let template = ports(
            &read("authchain.yaml"),
            &[
                (GRPC, "{{grpc_port}}".into()),
                (HTTP, "{{http_port}}".into()),
                (ADMIN, "{{admin_port}}".into()),
            ],
        );
        let authchain =
            Authchain::start_with_files(&template, &[], &[("app.yaml", app_yaml)]).await;
        let map = |own: String| {
            vec![
                (PROXY, own),
                (APP, app.addr().port().to_string()),
                (GRPC, authchain.grpc.port().to_string()),
                (HTTP, authchain.http.port().to_string()),
            ]
        };
        let text = read(proxy_file);
        let proxy = match proxy_file {
            "envoy.yaml" => Proxy::Envoy(
                Envoy::start(&ports(&text, &map(proxy_port.to_string())))
                    .await
                    .unwrap(),
            ),
            "nginx.conf" => Proxy::Nginx(
                Nginx::start_at(&ports(&text, &map("{{port}}".into())), proxy_port)
                    .await
                    .unwrap(),
            ),
            other => panic!("no proxy runs {other}"),
        };
        Login {
            app,
            idp,
            authchain,
            proxy,
            base,
        }
    }

    fn output(&self) -> String {
        format!(
            "{}\n--- authchain ---\n{}\n--- idp ---\n{}",
            self.proxy.output(),
            self.authchain.log(),
            self.idp.output()
        )
    }

    /// A user logs in, sees the app, is recognized on the next request
    /// without the IdP, and logs out.
    async fn log_in_and_out(&self) {
        let mut agent = UserAgent::new();
        let page = agent
            .login(&format!("{}/private?x=1", self.base), "alice", "alicepwd")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.output()));
        assert_eq!(page.status, 200, "{}\n{}", page.describe(), self.output());
        // Back where the user was going, on the app.
        assert!(
            page.url.ends_with("/private?x=1"),
            "{}\n{}",
            page.describe(),
            self.output()
        );
        let seen: EchoedRequest = serde_json::from_slice(&page.body).unwrap();
        assert_eq!(seen.path, "/private?x=1");

        // The session alone lets the next request through, and the email
        // header is the IdP's, whatever the client sends.
        let before = self.idp.requests().await.unwrap();
        let hits = self.app.hits();
        let mut forged = UserAgent::new().header("x-user-email", "mallory@example.com");
        *forged.jar_mut() = agent.jar().clone();
        let page = forged.get(&format!("{}/again", self.base)).await.unwrap();
        assert_eq!(page.status, 200, "{}\n{}", page.describe(), self.output());
        assert_eq!(self.app.hits(), hits + 1);
        let seen: EchoedRequest = serde_json::from_slice(&page.body).unwrap();
        assert_eq!(seen.header_all("x-user-email"), ["alice@example.com"]);
        let after = self.idp.requests().await.unwrap();
        assert_eq!(
            after.token, before.token,
            "a session costs no call to the IdP"
        );

        // Logout: the session is gone, the next request logs in again.
        let out = agent.get(&format!("{}/logout", self.base)).await.unwrap();
        assert!(
            out.status.is_success() || out.status.is_redirection(),
            "{}",
            out.describe()
        );
        let mut stopped = UserAgent::new().max_hops(0);
        *stopped.jar_mut() = agent.jar().clone();
        let again = stopped
            .get(&format!("{}/private", self.base))
            .await
            .unwrap();
        assert_eq!(again.status, 302, "{}\n{}", again.describe(), self.output());
        let location = again.location().unwrap_or_default();
        assert!(
            location.starts_with(&self.idp.issuer()),
            "a new login goes to the IdP: {location}"
        );
    }
}

#[tokio::test]
async fn log_in_with_your_idp_behind_envoy_grpc() {
    Login::start("envoy.yaml").await.log_in_and_out().await;
}

#[tokio::test]
async fn log_in_with_your_idp_behind_nginx() {
    Login::start("nginx.conf").await.log_in_and_out().await;
}
