//! Redis starts empty on a port of its own, answers, and can go down and
//! come back on the same port.

#![allow(clippy::unwrap_used)]

use authchain_testkit::redis::{Redis, Resp};

#[tokio::test]
async fn redis_sets_gets_stops_and_starts_again() {
    let mut redis = Redis::start().await.unwrap();
    let addr = redis.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(redis.url(), format!("redis://{addr}"));

    redis.set("session:a", "1").await.unwrap();
    redis.set("session:b", "2").await.unwrap();
    redis.set("other", "3").await.unwrap();
    assert_eq!(redis.get("session:a").await.unwrap().as_deref(), Some("1"));
    assert_eq!(
        redis.keys("session:*").await.unwrap(),
        ["session:a", "session:b"]
    );
    assert_eq!(
        redis.command(&["EXPIRE", "other", "100"]).await.unwrap(),
        Resp::Integer(1)
    );
    assert!((1..=100).contains(&redis.ttl("other").await.unwrap()));
    assert!(matches!(
        redis.command(&["NOSUCHCOMMAND"]).await.unwrap(),
        Resp::Error(_)
    ));

    redis.stop();
    assert!(!redis.is_running());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let e = redis.get("session:a").await.unwrap_err();
    assert!(e.message().contains("stopped"), "{e}");

    redis.start_again().await.unwrap();
    assert_eq!(redis.addr(), addr);
    assert_eq!(
        redis.get("session:a").await.unwrap(),
        None,
        "no persistence"
    );
    redis.set("k", "v").await.unwrap();
    redis.flushall().await.unwrap();
    assert!(redis.keys("*").await.unwrap().is_empty());
}
