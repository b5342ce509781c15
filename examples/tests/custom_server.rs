//! The custom server example's config, served by `authchain_server::Server`
//! with the example's plugin registered, as its `main` does.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use authchain_examples::required_header::RequiredHeaderPlugin;
use authchain_testkit::{ScratchDir, client, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_plugin_is_served_by_the_authchain_server() {
    let dir = ScratchDir::new("custom-server").unwrap();
    let (http, admin) = (free_port().unwrap(), free_port().unwrap());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/custom_server.yaml"))
            .unwrap()
            .replace("grpc: { address: 127.0.0.1:9001 }\n", "")
            .replace("127.0.0.1:9002", &format!("127.0.0.1:{http}"))
            .replace("127.0.0.1:9091", &format!("127.0.0.1:{admin}"));
    dir.write(
        "required_header.yaml",
        include_str!("../required_header.yaml"),
    )
    .unwrap();
    let config = dir.write("custom_server.yaml", &example).unwrap();

    let mut registry = authchain_server::default_registry();
    registry.register(RequiredHeaderPlugin);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        authchain_server::Server::new(registry)
            .config_file(config)
            .run_until(async {
                let _ = stopped.await;
            }),
    );
    let admin = ([127, 0, 0, 1], admin).into();
    let http = ([127, 0, 0, 1], http).into();
    for _ in 0..200 {
        if client::get(admin, "/readyz", &[])
            .await
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let path = "/check:gloo-system.plugin-auth/";
    let allowed = client::get(http, path, &[("my-header", "foo")])
        .await
        .unwrap();
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header_values("matched-allowed-headers"), ["true"]);
    let denied = client::get(http, path, &[("my-header", "nope")])
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    // The default config answers checks that name none; a path outside
    // the prefix is no check.
    assert_eq!(
        client::get(http, "/check/anything", &[("my-header", "bar")])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        client::get(http, "/anything", &[("my-header", "bar")])
            .await
            .unwrap()
            .status,
        404
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
