//! An HTTP request as a forward-auth proxy, Envoy's HTTP service or a
//! client of an axum app sends it, answered by the HTTP check server
//! (from a trusted proxy or not) and by the tower layer, over the example
//! AuthConfigs: no input may panic.

#![no_main]

mod common;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use authchain_http::{AuthChainLayer, CheckConfig, CheckServer, ForwardedHeaders};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

#[derive(Arbitrary, Debug)]
enum Peer {
    /// Trusted for `X-Forwarded-*`.
    Forwarded,
    /// Trusted for `X-Original-*`.
    Original,
    Untrusted,
    Unknown,
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: u8,
    /// `/check:{config}` then this; or, when `select` is false, this alone.
    select: bool,
    target: String,
    method: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    peer: Peer,
    /// Asks the layer rather than the check server.
    layer: bool,
}

fn request(input: &Input, target: &str) -> Option<Request<Full<Bytes>>> {
    let mut builder = Request::builder()
        .method(input.method.as_bytes())
        .uri(target);
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(input.body.clone())))
        .ok()
}

fuzz_target!(|input: Input| {
    let config = common::config(input.config);
    if input.layer {
        let Some(request) = request(&input, &input.target) else {
            return;
        };
        let app = tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"app"))))
        });
        let service = AuthChainLayer::from_engine(common::engine(), config).layer(app);
        let _ = common::runtime().block_on(service.oneshot(request));
        return;
    }
    let target = match input.select {
        true => format!("/check:{config}{}", input.target),
        false => input.target.clone(),
    };
    let Some(request) = request(&input, &target) else {
        return;
    };
    let peer = match input.peer {
        Peer::Forwarded => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 40000))),
        Peer::Original => Some(SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 40000))),
        Peer::Untrusted => Some(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 40000))),
        Peer::Unknown => None,
    };
    let checks = CheckConfig::default()
        .trust(
            ["127.0.0.0/8".parse().unwrap()],
            ForwardedHeaders::XForwarded,
        )
        .trust(["10.0.0.0/8".parse().unwrap()], ForwardedHeaders::XOriginal);
    let server = CheckServer::new(common::engine(), checks);
    common::runtime().block_on(server.check(request, peer));
});
