//! A CheckRequest as Envoy's gRPC ext_authz sends it, every field a
//! client or a proxy could shape, answered by the gRPC service over the
//! example AuthConfigs: no input may panic.

#![no_main]

mod common;

use std::collections::HashMap;

use arbitrary::Arbitrary;
use authchain_grpc::ExtAuthzService;
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    config: u8,
    own_config: Option<String>,
    method: String,
    scheme: String,
    host: String,
    path: String,
    protocol: String,
    headers: Vec<(String, String)>,
    /// Sent in `header_map` (as Envoy does with `encode_raw_headers`)
    /// rather than in `headers`.
    raw: bool,
    body: Option<Vec<u8>>,
    source: ([u8; 4], u16, String),
    certificate: String,
}

fn peer((ip, port, principal): ([u8; 4], u16, String)) -> Peer {
    let address = SocketAddress {
        address: std::net::Ipv4Addr::from(ip).to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port.into())),
        ..Default::default()
    };
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(address)),
        }),
        principal,
        ..Default::default()
    }
}

fuzz_target!(|input: Input| {
    let mut http = HttpRequest {
        method: input.method,
        scheme: input.scheme,
        host: input.host,
        path: input.path,
        protocol: input.protocol,
        ..Default::default()
    };
    if input.raw {
        http.header_map = Some(HeaderMap {
            headers: input
                .headers
                .into_iter()
                .map(|(key, value)| HeaderValue {
                    key,
                    raw_value: value.into_bytes(),
                    ..Default::default()
                })
                .collect(),
        });
    } else {
        http.headers = input.headers.into_iter().collect();
    }
    if let Some(body) = input.body {
        http.raw_body = body;
    }
    let mut source = peer(input.source);
    source.certificate = input.certificate;
    let config = input
        .own_config
        .unwrap_or_else(|| common::config(input.config).to_owned());
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            context_extensions: HashMap::from([("config_id".to_owned(), config)]),
            ..Default::default()
        }),
    };
    let service = ExtAuthzService::new(common::engine());
    common::runtime().block_on(service.check_request(check));
});
