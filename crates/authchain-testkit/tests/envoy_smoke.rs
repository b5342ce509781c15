//! Envoy starts from a template, proxies to the echo upstream, and is
//! killed on drop.

use authchain_testkit::{EchoServer, client, envoy::Envoy, render};

const CONFIG: &str = r#"
static_resources:
  listeners:
  - name: ingress
    enable_reuse_port: false
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [ { match: { prefix: "/" }, route: { cluster: upstream } } ]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream_port}} } } } } ] } ]
"#;

#[tokio::test]
async fn envoy_proxies_to_the_echo_upstream() {
    let upstream = EchoServer::start().await.unwrap();
    let config = render(
        CONFIG,
        &[("upstream_port", upstream.addr().port().to_string())],
    )
    .unwrap();
    let envoy = Envoy::start(&config).await.unwrap();
    let pid = envoy.peer().pid();
    let reply = client::get(
        envoy.listener("ingress").unwrap(),
        "/hello?x=1",
        &[("x-test", "yes")],
    )
    .await
    .unwrap();
    let seen = reply.echoed().unwrap();
    assert_eq!(seen.path, "/hello?x=1");
    assert_eq!(seen.header("x-test"), Some("yes"));
    assert_eq!(
        envoy
            .stat("cluster.upstream.upstream_rq_200")
            .await
            .unwrap(),
        Some(1)
    );
    assert!(envoy.listener("nope").is_err());
    drop(envoy);
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/status")).is_err(),
        "envoy still running"
    );
}

#[tokio::test]
async fn the_minimal_proxy_config_starts() {
    let upstream = EchoServer::start().await.unwrap();
    let yaml = authchain_testkit::envoy::Bootstrap::new(upstream.addr()).yaml();
    let envoy = Envoy::start(&yaml).await.unwrap();
    let reply = client::get(envoy.listener("ingress").unwrap(), "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.echoed().unwrap().path, "/");
}

#[tokio::test]
async fn the_http_service_config_asks_its_auth_server_first() {
    use authchain_testkit::envoy::{Bootstrap, HttpService};
    let upstream = EchoServer::start().await.unwrap();
    // The echo server answers every check with 200: an allow.
    let auth = EchoServer::start().await.unwrap();
    let service = HttpService {
        addr: auth.addr(),
        path_prefix: "/check:site",
        allowed_headers: &["my-header"],
        upstream_headers: &["x-user-id"],
        upstream_headers_to_append: &[],
        client_headers: &[],
    };
    let yaml = Bootstrap::new(upstream.addr()).http(service).yaml();
    let envoy = Envoy::start(&yaml).await.unwrap();
    let reply = client::get(envoy.listener("ingress").unwrap(), "/x", &[])
        .await
        .unwrap();
    assert_eq!(reply.echoed().unwrap().path, "/x");
    assert_eq!((auth.hits(), upstream.hits()), (1, 1));

    // No auth server: Envoy fails closed.
    let gone = HttpService {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], authchain_testkit::free_port().unwrap())),
        ..service
    };
    let yaml = Bootstrap::new(upstream.addr()).http(gone).yaml();
    let envoy = Envoy::start(&yaml).await.unwrap();
    let reply = client::get(envoy.listener("ingress").unwrap(), "/x", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(upstream.hits(), 1);
}
