//! The private Redis of `test_support::redis` against the real
//! `redis-server`: what the cluster-mode tests will rely on — data back after
//! a crash and restart with its AOF, gone after a restart without it, a
//! frozen Redis answering once thawed, nothing left behind on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use wshub_test_support::{RedisServer, LIMIT};

/// The state letter of `/proc/PID/stat` (`T` = stopped), `None` once the
/// process is gone. Read after the last `)`: the name before it may hold
/// spaces and parentheses.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

#[tokio::test]
async fn a_killed_redis_comes_back_with_its_data() {
    let mut redis = RedisServer::start().await;
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    let (port, pid) = (redis.port(), redis.pid());

    redis.kill();
    assert!(!redis.is_running());
    assert_eq!(proc_state(pid), None, "the killed process is reaped");
    let refused = redis.try_cli(&["PING"]).expect_err("nothing listens");
    assert!(refused.contains("Connection refused"), "{refused}");

    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    // A second crash and restart: the AOF keeps appending across restarts.
    assert_eq!(redis.cli(&["SET", "k2", "v2"]), "OK");
    redis.kill();
    redis.restart().await;
    assert_eq!(redis.cli(&["MGET", "k", "k2"]), "v\nv2");
}

#[tokio::test]
async fn restart_empty_comes_back_without_its_data() {
    let mut redis = RedisServer::start().await;
    redis.cli(&["SET", "k", "v"]);
    redis.kill();
    redis.restart_empty().await;
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    // Still persistent afterwards.
    redis.cli(&["SET", "k3", "v3"]);
    redis.kill();
    redis.restart().await;
    assert_eq!(redis.cli(&["GET", "k3"]), "v3");
    assert_eq!(redis.cli(&["EXISTS", "k"]), "0");
}

#[test]
fn without_persistence_every_restart_is_empty() {
    let mut redis = RedisServer::builder().persistence(false).start_blocking();
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
    redis.cli(&["SET", "k", "v"]);
    assert!(redis.stop().success(), "SIGTERM is a clean shutdown");
    redis.restart_blocking();
    assert_eq!(redis.cli(&["DBSIZE"]), "0");
    assert!(std::fs::read_dir(redis.dir()).unwrap().next().is_none());
}

#[test]
fn a_stopped_redis_keeps_its_data() {
    let mut redis = RedisServer::start_blocking();
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendfsync"]),
        "appendfsync\nno"
    );
    redis.cli(&["SET", "k", "v"]);
    assert!(redis.stop().success());
    redis.restart_blocking();
    assert_eq!(redis.cli(&["GET", "k"]), "v");
}

#[tokio::test]
async fn a_paused_redis_answers_once_resumed() {
    let mut redis = RedisServer::start().await;
    let mut conn = TcpStream::connect(redis.addr()).unwrap();
    conn.set_read_timeout(Some(LIMIT)).unwrap();

    redis.pause();
    assert_eq!(proc_state(redis.pid()), Some('T'), "stopped");
    // The kernel still accepts connections and takes requests for it.
    let mut late = TcpStream::connect(redis.addr()).unwrap();
    late.set_read_timeout(Some(LIMIT)).unwrap();
    conn.write_all(b"PING\r\n").unwrap();
    late.write_all(b"PING\r\n").unwrap();
    assert_eq!(proc_state(redis.pid()), Some('T'), "still stopped");

    redis.resume();
    for c in [&mut conn, &mut late] {
        let mut reply = [0; 7];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+PONG\r\n");
    }
    assert_ne!(proc_state(redis.pid()), Some('T'));
}

#[test]
fn a_paused_redis_can_be_stopped_and_killed() {
    let mut redis = RedisServer::start_blocking();
    redis.cli(&["SET", "k", "v"]);
    redis.pause();
    assert!(redis.stop().success(), "woken to shut down");
    redis.restart_blocking();
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    redis.pause();
    redis.kill();
    redis.restart_blocking();
    assert_eq!(redis.cli(&["GET", "k"]), "v");
}

#[tokio::test]
async fn cli_reports_errors_and_stats() {
    let redis = RedisServer::start().await;
    let err = redis.try_cli(&["NOSUCHCOMMAND"]).unwrap_err();
    assert!(err.contains("unknown command"), "{err}");
    redis.cli(&["SET", "k", "v"]);
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(
        stats.lines().any(|l| l.starts_with("cmdstat_set:calls=1,")),
        "{stats}"
    );
    assert!(redis.logs().iter().any(|l| l.contains("Ready to accept")));
}

#[test]
fn redis_servers_are_private_and_leave_nothing_behind() {
    let a = RedisServer::start_blocking();
    let b = RedisServer::start_blocking();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    a.cli(&["SET", "k", "a"]);
    assert_eq!(b.cli(&["EXISTS", "k"]), "0");

    let (pid, dir) = (a.pid(), a.dir().to_path_buf());
    assert!(Path::new(&dir).join("appendonlydir").is_dir());
    drop(a);
    assert_eq!(proc_state(pid), None, "killed and reaped on drop");
    assert!(!dir.exists(), "its directory is removed");
    assert_eq!(b.cli(&["PING"]), "PONG");
}

#[test]
#[should_panic(expected = "exited before \"Ready to accept connections\"")]
fn a_redis_that_cannot_start_fails_with_its_log() {
    // Redis refuses an unknown flag on stderr and exits: the start must say
    // so at once, not wait out LIMIT.
    RedisServer::builder()
        .args(&["--no-such-option", "x"])
        .start_blocking();
}
