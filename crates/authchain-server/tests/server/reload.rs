//! Hot reload: on file change and SIGHUP, no failed check while the config
//! flips, a broken config keeps the previous generation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Authchain, LISTENERS, check_request, grpc_status};

fn flip(action: &str) -> String {
    format!(
        "{LISTENERS}defaultConfig: flip
authConfigs:
- name: flip
  configs:
  - name: rule
    rules: {{ defaultAction: {action} }}
"
    )
}

#[derive(Default)]
struct Tally {
    allowed: AtomicUsize,
    denied: AtomicUsize,
    errors: AtomicUsize,
    last_error: std::sync::Mutex<Option<String>>,
    /// How many checks were recorded, for a wait on the next ones.
    recorded: tokio::sync::watch::Sender<usize>,
}

impl Tally {
    fn record(&self, status: Result<u16, String>) {
        match status {
            Ok(200) => self.allowed.fetch_add(1, Ordering::SeqCst),
            Ok(403) => self.denied.fetch_add(1, Ordering::SeqCst),
            Ok(other) => {
                *self.last_error.lock().unwrap() = Some(format!("status {other}"));
                self.errors.fetch_add(1, Ordering::SeqCst)
            }
            Err(e) => {
                *self.last_error.lock().unwrap() = Some(e);
                self.errors.fetch_add(1, Ordering::SeqCst)
            }
        };
        self.recorded.send_modify(|n| *n += 1);
    }

    /// Waits until a check begun after this call is recorded. (The loop
    /// sends one check at a time: of those recorded from now on, the
    /// second began after now.)
    async fn wait_for_a_new_check(&self, name: &str) {
        let now = *self.recorded.borrow();
        let mut recorded = self.recorded.subscribe();
        let next = recorded.wait_for(|n| *n >= now + 2);
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .unwrap_or_else(|_| panic!("{name}: no check recorded in 10 s"))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_flips_under_load_fail_no_check_and_switch_the_decision() {
    let mut server = Authchain::start(&flip("allow")).await;
    let done = Arc::new(AtomicBool::new(false));
    let http = Arc::new(Tally::default());
    let grpc = Arc::new(Tally::default());

    let http_loop = tokio::spawn({
        let (done, tally, addr) = (done.clone(), http.clone(), server.http);
        async move {
            while !done.load(Ordering::SeqCst) {
                let reply = authchain_testkit::client::get(addr, "/check:flip/x", &[]).await;
                tally.record(reply.map(|r| r.status.as_u16()).map_err(|e| e.to_string()));
            }
        }
    });
    let grpc_loop = tokio::spawn({
        let (done, tally) = (done.clone(), grpc.clone());
        let mut client = server.grpc_client().await;
        async move {
            while !done.load(Ordering::SeqCst) {
                let answer = client.check(check_request("flip", "/x", &[])).await;
                tally.record(match answer {
                    Ok(r) => match grpc_status(r.get_ref()) {
                        (0, 200) => Ok(200),
                        (7, 403) => Ok(403),
                        (code, status) => Ok(1000 + code as u16 * 1000 + status),
                    },
                    Err(e) => Err(e.to_string()),
                });
            }
        }
    });

    for i in 1..=20u64 {
        let allow = i % 2 == 0;
        server.rewrite(&flip(if allow { "allow" } else { "deny" }));
        server.wait_for_generation(i + 1).await;
        let reply = server.http_check("flip", "/x", &[]).await.unwrap();
        assert_eq!(
            reply.status,
            if allow { 200 } else { 403 },
            "after flip {i}"
        );
        // Each transport answers a check begun under this generation.
        http.wait_for_a_new_check("http").await;
        grpc.wait_for_a_new_check("grpc").await;
    }
    done.store(true, Ordering::SeqCst);
    http_loop.await.unwrap();
    grpc_loop.await.unwrap();

    for (name, tally) in [("http", &http), ("grpc", &grpc)] {
        assert_eq!(
            tally.errors.load(Ordering::SeqCst),
            0,
            "{name}: {:?}\n{}",
            tally.last_error.lock().unwrap(),
            server.peer.output()
        );
        assert!(
            tally.allowed.load(Ordering::SeqCst) > 0,
            "{name} never allowed"
        );
        assert!(
            tally.denied.load(Ordering::SeqCst) > 0,
            "{name} never denied"
        );
    }
    assert_eq!(server.generation().await, 21);
    assert_eq!(
        server
            .metric("authchain_reloads_total{result=\"ok\"}")
            .await,
        21.0
    );
    assert!(server.log().contains("got new config"), "{}", server.log());
}

/// Waits until the server's log says it rejected a config change.
async fn wait_for_a_rejection(server: &mut Authchain) {
    wait_for_rejections(server, 1).await;
}

/// Waits until the server's log says it rejected `n` config changes.
async fn wait_for_rejections(server: &mut Authchain, n: usize) {
    wait_for_logs(server, "config change rejected", n).await;
}

/// Waits until the server's log says `text`.
async fn wait_for_log(server: &mut Authchain, text: &'static str) {
    wait_for_logs(server, text, 1).await;
}

/// Waits until the server's log says `text` `n` times.
async fn wait_for_logs(server: &mut Authchain, text: &'static str, n: usize) {
    let log = server.peer.dir().join("stderr.log");
    server
        .peer
        .wait_until(Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let read = std::fs::read_to_string(log).unwrap_or_default();
                (read.matches(text).count() >= n).then_some(())
            }
        })
        .await
        .unwrap();
}

/// The listeners keep the `defaultConfig` they started with: a reload
/// whose AuthConfigs no longer have it (renamed, with `defaultConfig`
/// following) would leave every check that names none a 403 until a
/// restart. It is rejected, naming both.
#[tokio::test]
async fn a_reload_without_the_running_default_auth_config_is_rejected() {
    let mut server = Authchain::start(&format!("watch: false\n{}", flip("allow"))).await;
    server.rewrite(&format!(
        "watch: false\n{}",
        flip("allow").replace("flip", "flop")
    ));
    server.signal("HUP");
    wait_for_a_rejection(&mut server).await;
    let log = server.log();
    assert!(
        log.contains("defaultConfig") && log.contains("`flip`"),
        "{log}"
    );
    assert_eq!(server.generation().await, 1);
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
    // Nor in two steps: the new default first, beside the running one
    // (applied, with a restart warning), then the running one dropped.
    let both = format!(
        "{}  - name: other\n    rules: {{ defaultAction: allow }}\n- name: flop\n  configs:\n  - name: rule\n    rules: {{ defaultAction: deny }}\n",
        flip("allow")
    );
    server.rewrite(&format!(
        "watch: false\n{}",
        both.replacen("defaultConfig: flip", "defaultConfig: flop", 1)
    ));
    server.signal("HUP");
    server.wait_for_generation(2).await;
    server.rewrite(&format!(
        "watch: false\n{}",
        flip("allow").replace("flip", "flop")
    ));
    server.signal("HUP");
    wait_for_rejections(&mut server, 2).await;
    assert_eq!(server.generation().await, 2);
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn a_broken_config_keeps_the_serving_generation_and_sighup_reloads() {
    let mut server = Authchain::start(&format!("watch: false\n{}", flip("allow"))).await;
    // With watching off, a change waits for SIGHUP.
    server.rewrite(&format!("watch: false\n{}", flip("deny")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.generation().await, 1);
    server.signal("HUP");
    server.wait_for_generation(2).await;
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        403
    );

    // A broken config: logged with its place, counted, the old one serves.
    server.rewrite(&format!(
        "watch: false\n{}",
        flip("deny").replace("defaultAction: deny", "defaultAction: perhaps")
    ));
    server.signal("HUP");
    wait_for_a_rejection(&mut server).await;
    let log = server.log();
    assert!(
        log.contains("authConfigs[0]: configs[0].rules.defaultAction"),
        "{log}"
    );
    assert_eq!(
        server
            .metric("authchain_reloads_total{result=\"error\"}")
            .await,
        1.0
    );
    assert_eq!(server.generation().await, 2);
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        403
    );

    // SIGHUP reloads even an unchanged file (a new generation).
    server.rewrite(&format!("watch: false\n{}", flip("allow")));
    server.signal("HUP");
    server.wait_for_generation(3).await;
    server.signal("HUP");
    server.wait_for_generation(4).await;
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn files_of_auth_configs_are_watched_too() {
    let dir_template = format!("{LISTENERS}authConfigFiles: [configs/]\n");
    let scratch = authchain_testkit::ScratchDir::new("authchain-files").unwrap();
    let configs = scratch.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    std::fs::write(
        configs.join("a.yaml"),
        "name: a\nconfigs: [{ rules: { defaultAction: deny } }]\n",
    )
    .unwrap();
    let template = dir_template.replace("configs/", &format!("{}/", configs.display()));
    let mut server = Authchain::start(&template).await;
    assert_eq!(server.http_check("a", "/", &[]).await.unwrap().status, 403);
    // A new file in the directory adds an AuthConfig.
    std::fs::write(
        configs.join("b.json"),
        r#"{"name": "b", "configs": [{"rules": {"defaultAction": "allow"}}]}"#,
    )
    .unwrap();
    server.wait_for_generation(2).await;
    assert_eq!(server.http_check("b", "/", &[]).await.unwrap().status, 200);
    // A change to a file changes its AuthConfig.
    std::fs::write(
        configs.join("a.yaml"),
        "name: a\nconfigs: [{ rules: { defaultAction: allow } }]\n",
    )
    .unwrap();
    server.wait_for_generation(3).await;
    assert_eq!(server.http_check("a", "/", &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_reload_names_the_settings_that_need_a_restart() {
    let mut server = Authchain::start(&format!("watch: false\n{}", flip("allow"))).await;
    // A limit cannot change under a running listener: the reload says so
    // by name, and applies the AuthConfigs.
    server.rewrite(&format!(
        "watch: false\nmaxConcurrentChecks: 7\n{}",
        flip("deny")
    ));
    server.signal("HUP");
    server.wait_for_generation(2).await;
    let log = server.log();
    assert!(
        log.contains("need a restart") && log.contains("maxConcurrentChecks"),
        "{log}"
    );
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        403,
        "the AuthConfigs did reload"
    );
    // `userIdHeader` (the AuthConfigs' default) and the trusted proxies
    // (the check server's) reload with them, and no warning says
    // otherwise.
    let trusting = flip("allow").replace(
        "http: { address: '127.0.0.1:{{http_port}}' }",
        "http: { address: '127.0.0.1:{{http_port}}', trustedProxies: [{ network: 10.0.0.0/8, headers: x-original }] }",
    );
    assert_ne!(trusting, flip("allow"), "the listener line is where it was");
    server.rewrite(&format!(
        "watch: false\nmaxConcurrentChecks: 7\nuserIdHeader: x-user\n{trusting}"
    ));
    server.signal("HUP");
    server.wait_for_generation(3).await;
    wait_for_log(&mut server, "trusts the reloaded trustedProxies").await;
    let log = server.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("need a restart"))
            .all(|l| l.ends_with("settings=maxConcurrentChecks")),
        "{log}"
    );
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
}

/// A decision log that the next start would refuse is refused at the
/// reload too, by name: the reload's "needs a restart" was the last word
/// before a crash loop.
#[tokio::test]
async fn a_reload_refuses_a_decision_log_the_next_start_would() {
    let mut server = Authchain::start(&format!("watch: false\n{}", flip("allow"))).await;
    server.rewrite(&format!(
        "watch: false\ndecisionLog: {{ path: d.jsonl, sample: 2 }}\n{}",
        flip("deny")
    ));
    server.signal("HUP");
    wait_for_a_rejection(&mut server).await;
    assert!(
        server.log().contains("decisionLog.sample"),
        "{}",
        server.log()
    );
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
}

/// A config file emptied, or left with its listeners and no AuthConfig
/// (caught while written), is not loaded over the serving generation;
/// SIGHUP loads the second if that is the intent.
#[tokio::test]
async fn a_file_emptied_or_left_without_auth_configs_is_not_loaded() {
    let configs = "authConfigs:\n- name: flip\n  configs: [{ rules: { defaultAction: allow } }]\n";
    let mut server = Authchain::start(&format!("{LISTENERS}{configs}")).await;
    server.rewrite("");
    wait_for_a_rejection(&mut server).await;
    assert!(
        server.log().contains("no check listener"),
        "{}",
        server.log()
    );
    server.rewrite(LISTENERS);
    wait_for_rejections(&mut server, 2).await;
    assert!(server.log().contains("no AuthConfigs"), "{}", server.log());
    assert_eq!(server.generation().await, 1);
    assert_eq!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
    server.signal("HUP");
    server.wait_for_generation(2).await;
    assert_ne!(
        server.http_check("flip", "/x", &[]).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn a_file_written_in_pieces_is_read_only_when_whole() {
    // Cut anywhere before its last step, this config allows everything;
    // whole, it denies everything, as the one it replaces does.
    // Long comments keep a valid, weaker prefix on disk for a while.
    let comment = "  # the next step closes what the one above opens\n".repeat(12);
    let gated = format!(
        "defaultConfig: flip
authConfigs:
- name: flip
  configs:
  - name: open
    rules: {{ defaultAction: allow }}
{comment}  - name: gate
    rules: {{ defaultAction: deny }}
{comment}{LISTENERS}"
    );
    let mut server = Authchain::start(&flip("deny")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let allowed = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let http = server.http;
    let load = tokio::spawn({
        let (stop, allowed, checks) = (stop.clone(), allowed.clone(), checks.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let reply = authchain_testkit::client::get(http, "/check:flip/x", &[]).await;
                if reply.is_ok_and(|r| r.status == 200) {
                    allowed.fetch_add(1, Ordering::SeqCst);
                }
                checks.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // 12 bytes every 10 ms (well inside the server's 200 ms of quiet):
    // over a second of a half-written file.
    server
        .write_in_pieces(&gated, 12, Duration::from_millis(10))
        .await;
    server.wait_for_generation(2).await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        allowed.load(Ordering::SeqCst),
        0,
        "a half-written config served ({} checks)\n{}",
        checks.load(Ordering::SeqCst),
        server.log()
    );
    assert!(
        checks.load(Ordering::SeqCst) > 50,
        "the loop ran throughout"
    );
    assert_eq!(
        server.generation().await,
        2,
        "one reload, of the whole file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_whose_key_server_is_down_blocks_no_other_change() {
    let mut server = Authchain::start(&format!("watch: false\n{}", flip("allow"))).await;
    // The reload revokes `flip` and adds a JWT config whose key server is
    // not up yet.
    let port = authchain_testkit::free_port().unwrap();
    let jwt = format!(
        "- name: tokens
  configs:
  - jwt:
      jwks: {{ remote: {{ url: 'http://127.0.0.1:{port}/jwks.json', allowInsecureHttp: true, timeout: 1s }} }}
"
    );
    server.rewrite(&format!("watch: false\n{}{jwt}", flip("deny")));
    server.signal("HUP");
    server.wait_for_generation(2).await;
    let status = |server: &Authchain, config: &'static str| {
        let http = server.http;
        async move {
            authchain_testkit::client::get(http, &format!("/check:{config}/x"), &[])
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(status(&server, "flip").await, 403, "the revocation applies");
    assert_eq!(status(&server, "tokens").await, 403, "fails closed");
    let ready = server.readyz().await;
    assert_eq!(ready.status, 200);
    assert!(
        ready
            .text()
            .contains("waiting: AuthConfig 'tokens' step 'config_0'"),
        "{}",
        ready.text()
    );
    // The key server comes up: the step starts, and judges tokens (none
    // here: 401, not a failure's 403).
    let jwks = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../authchain-steps/tests/keys/jwks.json"
    ))
    .unwrap();
    let _jwks = serve_fixed(port, jwks).await;
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while status(&server, "tokens").await != 401 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    started.await.expect("the step started");
    let ready = server.readyz().await;
    assert!(!ready.text().contains("waiting"), "{}", ready.text());
}

/// Serves `body` to every request on 127.0.0.1:`port` until dropped.
async fn serve_fixed(port: u16, body: String) -> tokio::task::JoinHandle<()> {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let body = bytes::Bytes::from(body);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A step's file named by a relative path is read beside the config file,
/// wherever the binary was started (here the test's own directory), and
/// watched: a key taken out of it is refused at once, with no SIGHUP and no
/// change to the config. So is one taken out of a Kubernetes Secret volume
/// (`keys.yaml` → `..data/keys.yaml`, `..data` swapped to a new directory).
#[tokio::test]
async fn a_relative_keys_file_is_read_beside_the_config_and_watched() {
    use std::os::unix::fs::symlink;

    let keys = |list: &[&str]| {
        list.iter()
            .map(|k| format!("- {{ key: {k} }}\n"))
            .collect::<String>()
    };
    let config = format!(
        "{LISTENERS}authConfigs:
- name: keys
  configs:
  - apiKeyAuth: {{ headerName: api-key, keysFile: secret/keys.yaml }}
"
    );
    let (one, two, three) = (
        "k3y-one-0123456789",
        "k3y-two-0123456789",
        "k3y-three-0123456789",
    );
    let mut server = Authchain::start_with_files(
        &config,
        &[],
        &[("secret/keys.yaml", keys(&[one, two, three]))],
    )
    .await;
    let status = async |server: &Authchain, key: &str| {
        let reply = server.http_check("keys", "/", &[("api-key", key)]).await;
        reply.unwrap().status
    };
    assert_eq!(status(&server, one).await, 200);
    let secret = server.peer.dir().join("secret");
    std::fs::write(secret.join("keys.yaml"), keys(&[two, three])).unwrap();
    server.wait_for_generation(2).await;
    assert_eq!(status(&server, one).await, 401);
    assert_eq!(status(&server, two).await, 200);

    // The file becomes a Secret volume's link (its keys listed the other
    // way round: a reload is for a change), then the volume is updated.
    let version = |name: &str, list: &[&str]| {
        std::fs::create_dir(secret.join(name)).unwrap();
        std::fs::write(secret.join(name).join("keys.yaml"), keys(list)).unwrap();
        symlink(name, secret.join("..data_tmp")).unwrap();
        std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    };
    version("..v1", &[three, two]);
    symlink("..data/keys.yaml", secret.join("keys.link")).unwrap();
    std::fs::rename(secret.join("keys.link"), secret.join("keys.yaml")).unwrap();
    server.wait_for_generation(3).await;
    assert_eq!(status(&server, two).await, 200);
    version("..v2", &[three]);
    server.wait_for_generation(4).await;
    assert_eq!(status(&server, two).await, 401);
    assert_eq!(status(&server, three).await, 200);
}

/// A reload that names a step file not there yet (a Secret volume that
/// has not caught up with its ConfigMap) is rejected, and the file is
/// watched from then on: its arrival, wrong and then right, is tried
/// again with no other change.
#[tokio::test]
async fn a_step_file_a_rejected_reload_named_is_watched_until_it_mends_it() {
    let config = |file: &str| {
        format!(
            "{LISTENERS}authConfigs:
- name: keys
  configs:
  - apiKeyAuth: {{ headerName: api-key, keysFile: {file} }}
"
        )
    };
    let (one, two) = ("k3y-one-0123456789", "k3y-two-0123456789");
    let mut server = Authchain::start_with_files(
        &config("secret/keys.yaml"),
        &[],
        &[
            ("secret/keys.yaml", format!("- {{ key: {one} }}\n")),
            ("rotated/README", "keys arrive here\n".to_owned()),
        ],
    )
    .await;
    let status = async |server: &Authchain, key: &str| {
        let reply = server.http_check("keys", "/", &[("api-key", key)]).await;
        reply.unwrap().status
    };
    server.rewrite(&config("rotated/keys.yaml"));
    wait_for_rejections(&mut server, 1).await;
    assert!(
        server.log().contains("rotated/keys.yaml"),
        "{}",
        server.log()
    );
    assert_eq!(status(&server, one).await, 200);

    let rotated = server.peer.dir().join("rotated/keys.yaml");
    std::fs::write(&rotated, "not: [a key list\n").unwrap();
    wait_for_rejections(&mut server, 2).await;
    std::fs::write(&rotated, format!("- {{ key: {two} }}\n")).unwrap();
    server.wait_for_generation(2).await;
    assert_eq!(status(&server, one).await, 401);
    assert_eq!(status(&server, two).await, 200);
}

/// A change that drops a file and is rejected, then undone: the file is
/// watched again, and a change to it reloads (it was no longer watched,
/// and the server kept serving its old text until a SIGHUP).
#[tokio::test]
async fn a_file_a_rejected_change_dropped_is_watched_again_when_it_is_undone() {
    let config =
        |files: &str, broken: &str| format!("{LISTENERS}authConfigFiles: [{files}]\n{broken}");
    let serving = config("a.yaml, b.yaml", "");
    let b =
        |action: &str| format!("name: b\nconfigs: [{{ rules: {{ defaultAction: {action} }} }}]\n");
    let mut server = Authchain::start_with_files(
        &serving,
        &[],
        &[
            (
                "a.yaml",
                "name: a\nconfigs: [{ rules: { defaultAction: allow } }]\n".to_owned(),
            ),
            ("b.yaml", b("deny")),
        ],
    )
    .await;
    assert_eq!(server.http_check("b", "/", &[]).await.unwrap().status, 403);
    server.rewrite(&config(
        "a.yaml",
        "authConfigs: [{ name: c, configs: [{ rules: { defaultAction: maybe } }] }]\n",
    ));
    wait_for_a_rejection(&mut server).await;
    server.rewrite(&serving);
    wait_for_log(&mut server, "nothing to reload").await;
    std::fs::write(server.peer.dir().join("b.yaml"), b("allow")).unwrap();
    server.wait_for_generation(2).await;
    assert_eq!(server.http_check("b", "/", &[]).await.unwrap().status, 200);
}

/// A change that names a new file which does not read is rejected, and
/// the file is watched from then on: mending it reloads.
#[tokio::test]
async fn a_new_file_that_does_not_read_is_watched_until_it_is_mended() {
    let config = |files: &str| format!("{LISTENERS}authConfigFiles: [{files}]\n");
    let mut server = Authchain::start_with_files(
        &config("a.yaml"),
        &[],
        &[(
            "a.yaml",
            "name: a\nconfigs: [{ rules: { defaultAction: allow } }]\n".to_owned(),
        )],
    )
    .await;
    let c = server.peer.dir().join("c.yaml");
    std::fs::write(&c, "name: c\nconfigs: [{ rules: { defaultAction: allow }\n").unwrap();
    server.rewrite(&config("a.yaml, c.yaml"));
    wait_for_a_rejection(&mut server).await;
    std::fs::write(
        &c,
        "name: c\nconfigs: [{ rules: { defaultAction: allow } }]\n",
    )
    .unwrap();
    server.wait_for_generation(2).await;
    assert_eq!(server.http_check("c", "/", &[]).await.unwrap().status, 200);
}

/// A config file that is a symbolic link: a Kubernetes ConfigMap's
/// (`authchain.yaml` → `..data/authchain.yaml`, `..data` swapped to a new
/// directory), and one into another directory (stow, Nix, a host path),
/// whose target is edited there.
#[tokio::test]
async fn a_config_file_behind_a_symbolic_link_is_watched_through_it() {
    use std::os::unix::fs::symlink;

    let mut server = Authchain::start(&flip("allow")).await;
    let allow = std::fs::read_to_string(&server.config).unwrap();
    let deny = allow.replace("defaultAction: allow", "defaultAction: deny");
    let dir = server.peer.dir().to_owned();
    let status =
        async |server: &Authchain| server.http_check("flip", "/x", &[]).await.unwrap().status;
    // Puts a symbolic link to `target` at the config's path, at once.
    let link_config = |target: &std::path::Path| {
        let aside = dir.join("authchain.yaml.link");
        symlink(target, &aside).unwrap();
        std::fs::rename(&aside, dir.join("authchain.yaml")).unwrap();
    };

    // The ConfigMap's layout, then its swap.
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/authchain.yaml"), &deny).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    link_config(std::path::Path::new("..data/authchain.yaml"));
    server.wait_for_generation(2).await;
    assert_eq!(status(&server).await, 403);
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/authchain.yaml"), &allow).unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    server.wait_for_generation(3).await;
    assert_eq!(status(&server).await, 200);

    // A link into another directory, and an edit there.
    let elsewhere = authchain_testkit::ScratchDir::new("authchain-elsewhere").unwrap();
    let real = elsewhere.write("real.yaml", &deny).unwrap();
    link_config(&real);
    server.wait_for_generation(4).await;
    assert_eq!(status(&server).await, 403);
    let aside = elsewhere.write("real.yaml.new", &allow).unwrap();
    std::fs::rename(&aside, &real).unwrap();
    server.wait_for_generation(5).await;
    assert_eq!(status(&server).await, 200);
}

/// The HTTP check server trusts the proxies a reload names, at once: a
/// trust taken away must not go on until a restart.
#[tokio::test]
async fn trusted_proxies_reload_at_once() {
    let only_public = |trust: &str| {
        format!(
            "watch: false\n{}",
            flip("deny")
                .replace(
                    "rules: { defaultAction: deny }",
                    "rules: { defaultAction: deny, rules: [{ action: allow, path: { prefix: /public/ } }] }",
                )
                .replace(
                    "http: { address: '127.0.0.1:{{http_port}}' }",
                    &format!("http: {{ address: '127.0.0.1:{{{{http_port}}}}'{trust} }}"),
                )
        )
    };
    let trusting = ", trustedProxies: [{ network: 127.0.0.1/32, headers: x-original }]";
    assert!(only_public(trusting).contains("127.0.0.1/32"));
    let mut server = Authchain::start(&only_public(trusting)).await;
    // nginx's auth_request: the check's own path is its location, the
    // request's is in X-Original-URI, believed from a trusted proxy.
    let nginx = [
        ("x-original-uri", "/public/a"),
        ("x-original-method", "GET"),
    ];
    let check =
        async |server: &Authchain| server.http_check("flip", "", &nginx).await.unwrap().status;
    assert_eq!(check(&server).await, 200);
    server.rewrite(&only_public(""));
    server.signal("HUP");
    server.wait_for_generation(2).await;
    // The check server takes the trust just after the generation serves.
    wait_for_log(&mut server, "trusts the reloaded trustedProxies").await;
    assert_ne!(check(&server).await, 200, "{}", server.log());
    server.rewrite(&only_public(trusting));
    server.signal("HUP");
    server.wait_for_generation(3).await;
    wait_for_logs(&mut server, "trusts the reloaded trustedProxies", 2).await;
    assert_eq!(check(&server).await, 200);
}

/// A reload builds its steps off the runtime's workers: with one worker
/// (a one-CPU pod), a step whose build takes its time (a large policy, a
/// keys file of millions) holds no check. The build here waits until the
/// check was answered, or 10 s: a build on the worker would hold that
/// check until then.
#[test]
fn a_reload_s_build_holds_no_check_on_a_single_worker() {
    use authchain_core::{Allow, plugin_fn, service_fn};
    use std::sync::Mutex;
    use std::sync::mpsc;

    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let waited_out = Arc::new(AtomicBool::new(false));
    let building = Arc::new(tokio::sync::Notify::new());
    let mut registry = authchain_server::default_registry();
    {
        let (waited_out, building) = (waited_out.clone(), building.clone());
        registry.register(plugin_fn("SlowBuild", move |_: serde_json::Value, _| {
            building.notify_one();
            let waited = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            waited_out.store(waited.is_err(), Ordering::SeqCst);
            Ok(Arc::new(service_fn(|_| {
                Box::pin(async { Ok(Allow::new().into()) })
            })))
        }));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = authchain_testkit::ScratchDir::new("single-worker").unwrap();
        let http = authchain_testkit::free_port().unwrap();
        let config = |extra: &str| {
            format!(
                "http: {{ address: '127.0.0.1:{http}' }}
authConfigs:
- name: a
  configs: [{{ rules: {{ defaultAction: allow }} }}]
{extra}"
            )
        };
        let path = dir.write("authchain.yaml", &config("")).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            authchain_server::Server::new(registry)
                .config_file(&path)
                .run_until(async {
                    let _ = stopped.await;
                }),
        );
        let http = ([127, 0, 0, 1], http).into();
        let check = async || {
            authchain_testkit::client::get(http, "/check:a/", &[])
                .await
                .map_or(0, |r| r.status.as_u16())
        };
        for _ in 0..400 {
            if check().await == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let aside = dir.write(
            "authchain.yaml.new",
            &config("- name: slow\n  configs: [{ pluginAuth: { name: SlowBuild } }]\n"),
        );
        std::fs::rename(aside.unwrap(), &path).unwrap();
        building.notified().await;
        assert_eq!(check().await, 200);
        assert!(
            !waited_out.load(Ordering::SeqCst),
            "the check waited for the build"
        );
        release.send(()).unwrap();
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    });
}
