//! Properties over arbitrary checks: reading one never panics, and from a
//! trusted proxy only its own family of forwarded headers decides.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p authchain-http
//! --test properties`.

#![allow(clippy::unwrap_used)]

use authchain_core::Peer;
use authchain_http::{CheckConfig, ForwardedHeaders};
use http::{HeaderName, HeaderValue, Request};
use proptest::prelude::*;

const NAMES: &[&str] = &[
    "host",
    "x-request-id",
    "x-original-uri",
    "x-original-method",
    "x-original-url",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x_forwarded_uri",
    "authorization",
];

fn headers() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    proptest::collection::vec(
        (
            0..NAMES.len(),
            prop_oneof![
                Just(b"/public/x".to_vec()),
                Just(b"GET".to_vec()),
                Just(b"app.example".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..12),
            ],
        ),
        0..8,
    )
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/check:site".to_owned()),
        Just("/check".to_owned()),
        "/check(:[a-z]{0,4})?(/[a-z.%:;]{0,6}){0,3}(\\?[a-z=&]{0,6})?",
        "[ -~]{0,16}",
    ]
}

fn config() -> impl Strategy<Value = CheckConfig> {
    prop_oneof![
        Just(CheckConfig::default()),
        Just(CheckConfig::default().default_config("site")),
        Just(CheckConfig::default().trust(
            ["127.0.0.0/8".parse().unwrap()],
            ForwardedHeaders::XOriginal
        )),
        Just(CheckConfig::default().trust(
            ["127.0.0.0/8".parse().unwrap()],
            ForwardedHeaders::XForwarded
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_check_is_read_or_refused(
        config in config(),
        target in target(),
        headers in headers(),
        trusted in any::<bool>(),
    ) {
        let Ok(mut request) = Request::get(target.as_str()).body(()) else {
            return Ok(());
        };
        for (name, value) in headers {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                request.headers_mut().append(HeaderName::from_static(NAMES[name]), value);
            }
        }
        let (mut parts, ()) = request.into_parts();
        let ip = if trusted { [127, 0, 0, 1] } else { [192, 0, 2, 1] };
        let peer = Peer::from_address((ip, 5000).into());
        if let Ok((_, read)) = config.read(&mut parts, None, peer) {
            // What was read is a path a chain can judge or refuse, never
            // nothing taken for `/`.
            prop_assert!(!read.path.is_empty());
        }
    }

    #[test]
    fn only_the_trusted_family_decides(
        other in proptest::collection::vec((0..4usize, "/[a-z]{0,6}"), 0..6),
    ) {
        // nginx's family says /public/x; whatever of the other family a
        // client adds, that is what is read.
        let mut request = Request::get("/check:site")
            .header("x-original-uri", "/public/x")
            .header("x-original-method", "GET")
            .body(())
            .unwrap();
        let names = ["x-forwarded-uri", "x-forwarded-method", "x-forwarded-host", "x-original-url"];
        for (name, value) in &other {
            request.headers_mut().append(names[*name], HeaderValue::try_from(value.as_str()).unwrap());
        }
        let (mut parts, ()) = request.into_parts();
        let config = CheckConfig::default()
            .trust(["127.0.0.0/8".parse().unwrap()], ForwardedHeaders::XOriginal);
        let (config_name, read) = config
            .read(&mut parts, None, Peer::from_address(([127, 0, 0, 1], 5000).into()))
            .unwrap();
        prop_assert_eq!(config_name.as_deref(), Some("site"));
        prop_assert_eq!((read.method.as_str(), read.path.as_str()), ("GET", "/public/x"));
    }
}
