//! A tiny relying party for the login smoke tests: `/` redirects to the
//! IdP's authorization URL, `/callback` shows the code and state it got,
//! `/logged-out` says so.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The app's socket, bound before the IdP starts (its redirect URI names
/// the port), and where `/` sends the browser, set once the IdP runs.
pub struct App {
    pub addr: SocketAddr,
    authorize: Arc<OnceLock<String>>,
}

impl App {
    /// Binds 127.0.0.1:0 and serves.
    pub async fn start() -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authorize: Arc<OnceLock<String>> = Arc::default();
        let shared = authorize.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let authorize = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let authorize = authorize.clone();
                        async move { Ok::<_, Infallible>(answer(&req, authorize.get())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        App { addr, authorize }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Where `/` redirects to.
    pub fn set_authorize_url(&self, url: String) {
        self.authorize.set(url).unwrap();
    }
}

fn answer(req: &Request<Incoming>, authorize: Option<&String>) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or_default();
    let param = |name: &str| {
        authchain_testkit::login::form_urldecode(query)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| "(none)".to_owned())
    };
    let html = |body: String| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Full::new(Bytes::from(format!(
                "<!DOCTYPE html><html><body>{body}</body></html>"
            ))))
            .unwrap()
    };
    match (req.uri().path(), authorize) {
        ("/", Some(authorize)) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, authorize)
            .body(Full::default())
            .unwrap(),
        ("/callback", _) => html(format!(
            "<p>hello {}</p><p>state {}</p>",
            param("code"),
            param("state")
        )),
        ("/logged-out", _) => html(format!("<p>logged out, state {}</p>", param("state"))),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::default())
            .unwrap(),
    }
}
