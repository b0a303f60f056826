//! Flags of `wshub-server` (PROTOCOL.md §8). Every flag has a `WSHUB_*`
//! environment variable; repeatable flags take a comma-separated list there.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use clap::Parser;
use hub_core::{HistoryConfig, NodeConfig, Rules};

/// wshub: a self-hosted real-time messaging hub. Backends push to users and
/// groups over the server API; users chat over WebSockets.
#[derive(Debug, Clone, Parser)]
#[command(name = "wshub-server", version, max_term_width = 100)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (logged as `listening on ADDR`).
    #[arg(
        long,
        env = "WSHUB_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR",
        value_parser = listen_addr
    )]
    pub listen: SocketAddr,

    /// HS256 secret that signs connection tokens. Required unless --insecure-dev.
    #[arg(long, env = "WSHUB_SECRET", value_name = "S", hide_env_values = true)]
    pub secret: Option<String>,

    /// Key backends present as `Authorization: Bearer <key>` on /api/v1/*.
    /// Without it the API is disabled (404).
    #[arg(long, env = "WSHUB_API_KEY", value_name = "K", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Group id prefix any user may join without it being in their token (repeatable).
    #[arg(
        long = "public-group",
        env = "WSHUB_PUBLIC_GROUP",
        value_name = "PREFIX",
        value_delimiter = ','
    )]
    pub public_groups: Vec<String>,

    /// Origin allowed to open /ws (repeatable). Default: any origin when a token is used.
    #[arg(
        long = "allowed-origin",
        env = "WSHUB_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Largest frame a client may send, in bytes; larger ones close the connection with 1009.
    #[arg(
        long,
        env = "WSHUB_MAX_FRAME",
        default_value = "65536",
        value_name = "BYTES"
    )]
    pub max_frame: NonZeroUsize,

    /// Outbound queue per connection, in frames; a connection whose queue is full is closed (1013).
    #[arg(
        long,
        env = "WSHUB_QUEUE",
        default_value = "1024",
        value_name = "FRAMES"
    )]
    pub queue: NonZeroUsize,

    /// Frames per second each connection may send (burst twice that).
    #[arg(
        long,
        env = "WSHUB_RATE",
        default_value = "100",
        value_name = "PER_SEC"
    )]
    pub rate: NonZeroU32,

    /// Seconds between server pings; two silent intervals close a connection.
    #[arg(
        long,
        env = "WSHUB_HEARTBEAT",
        default_value = "25",
        value_name = "SECS"
    )]
    pub heartbeat: NonZeroU32,

    /// Seconds open sockets get to drain and close at shutdown.
    #[arg(
        long,
        env = "WSHUB_SHUTDOWN_GRACE",
        default_value = "5",
        value_name = "SECS"
    )]
    pub shutdown_grace: u64,

    /// Most open WebSockets on this process; past it an upgrade is refused with 503.
    /// 0: as many as open files allow.
    #[arg(
        long,
        env = "WSHUB_MAX_CONNECTIONS",
        default_value = "0",
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Most connections one user may hold at once; past it an upgrade is refused with 429.
    #[arg(
        long,
        env = "WSHUB_MAX_USER_CONNECTIONS",
        default_value = "64",
        value_name = "N"
    )]
    pub max_user_connections: NonZeroUsize,

    /// Most groups one user may belong to; a join past it is refused with limit_exceeded.
    #[arg(
        long,
        env = "WSHUB_MAX_USER_GROUPS",
        default_value = "1024",
        value_name = "N"
    )]
    pub max_user_groups: NonZeroUsize,

    /// Messages kept per stream for resume and the history API (0: number
    /// messages but keep none).
    #[arg(
        long,
        env = "WSHUB_HISTORY",
        default_value = "100",
        value_name = "MESSAGES"
    )]
    pub history: usize,

    /// Seconds a message is kept; a stream with no new message for this
    /// long is forgotten and its numbering restarts under a new epoch.
    #[arg(
        long,
        env = "WSHUB_HISTORY_TTL",
        default_value = "86400",
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub history_ttl: u64,

    /// Seconds a push's Idempotency-Key is remembered.
    #[arg(
        long,
        env = "WSHUB_IDEMPOTENCY_WINDOW",
        default_value = "300",
        value_name = "SECS"
    )]
    pub idempotency_window: u64,

    /// Redis server of a cluster (redis://HOST:PORT/DB): many processes form one hub.
    /// Without it: one process, everything in memory.
    #[arg(long, env = "WSHUB_REDIS", value_name = "URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// Development mode: `?userId=` without a token, any group, API without a key.
    /// Only on a loopback --listen address.
    /// The variable takes the usual spellings: 1/0, true/false, yes/no,
    /// on/off (empty: off).
    #[arg(
        long,
        env = "WSHUB_INSECURE_DEV",
        action = clap::ArgAction::SetTrue,
        value_parser = switch
    )]
    pub insecure_dev: bool,
}

impl Config {
    /// Checks what clap cannot: one clear line for each problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.insecure_dev {
            if !self.listen.ip().is_loopback() {
                return Err(format!(
                    "--insecure-dev refuses to listen on non-loopback address {}",
                    self.listen
                ));
            }
        } else if self.secret.as_deref().is_none_or(str::is_empty) {
            return Err(
                "--secret (or WSHUB_SECRET) is required unless --insecure-dev is given".into(),
            );
        }
        if self.api_key.as_deref() == Some("") {
            return Err("--api-key must not be empty".into());
        }
        if self.max_frame.get() < 128 {
            return Err("--max-frame must be at least 128 bytes".into());
        }
        if self.rate.get() > u32::MAX / 2 {
            return Err("--rate is too large".into());
        }
        Ok(())
    }

    pub fn rate_burst(&self) -> u32 {
        self.rate.get() * 2
    }

    /// The hub-core settings these flags make.
    pub fn node_config(&self) -> NodeConfig {
        NodeConfig {
            queue_capacity: self.queue.get(),
            max_user_connections: self.max_user_connections,
            max_user_groups: self.max_user_groups,
            rules: Rules {
                open: self.insecure_dev,
                public_groups: self.public_groups.clone(),
            },
            history: HistoryConfig {
                max_messages: self.history,
                ttl: Duration::from_secs(self.history_ttl),
            },
            idempotency_window: Duration::from_secs(self.idempotency_window),
        }
    }
}

/// `--listen`: an IP address and port, or a host name and port
/// (`localhost:8080`), looked up once at startup; a name with several
/// addresses listens on its first IPv4 one, else its first.
fn listen_addr(v: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = v.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let found: Vec<SocketAddr> = v
        .to_socket_addrs()
        .map_err(|e| format!("{v:?} is not HOST:PORT or IP:PORT ({e})"))?
        .collect();
    // IPv4 first: `localhost` often lists ::1 first, and clients (ours
    // included, by default) dial 127.0.0.1.
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{v:?} names no address"))
}

/// An on/off flag's environment value: 1/0, true/false, yes/no, on/off in
/// any case, or empty for off. Anything else is refused rather than
/// guessed at: this is the switch that turns authentication off.
fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        "0" | "false" | "no" | "off" | "n" | "f" | "" => Ok(false),
        other => Err(format!(
            "{other:?} is not on or off (use 1/0, true/false, yes/no, on/off)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let c = Config::try_parse_from(std::iter::once("wshub-server").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&["--secret", "s"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.max_frame.get(), 65536);
        assert_eq!(c.queue.get(), 1024);
        assert_eq!(c.rate.get(), 100);
        assert_eq!(c.rate_burst(), 200);
        assert_eq!(c.heartbeat.get(), 25);
        assert_eq!(c.shutdown_grace, 5);
        assert!(!c.insecure_dev);
        assert_eq!(c.max_connections, 0);
        assert_eq!(c.max_user_connections.get(), 64);
        assert_eq!(c.max_user_groups.get(), 1024);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--secret", "s", "--queue", "0"]).is_err());
        assert!(parse(&["--secret", "s", "--listen", "nowhere"]).is_err());
        assert!(parse(&["--secret", "s", "--listen", "localhost"]).is_err());
        let c = parse(&["--secret", "s", "--listen", "localhost:0"]).unwrap();
        assert!(c.listen.ip().is_loopback() && c.listen.port() == 0);
        assert!(parse(&[]).is_err());
        assert!(parse(&["--insecure-dev", "--listen", "0.0.0.0:1"]).is_err());
        assert!(parse(&["--insecure-dev"]).is_ok());
    }

    #[test]
    fn a_switch_takes_the_usual_spellings_and_refuses_the_rest() {
        for on in ["1", "true", "TRUE", "yes", "On", " y "] {
            assert_eq!(switch(on), Ok(true), "{on:?}");
        }
        for off in ["0", "false", "no", "OFF", ""] {
            assert_eq!(switch(off), Ok(false), "{off:?}");
        }
        for bad in ["banana", "2", "enable"] {
            assert!(switch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn public_group_prefixes_reach_the_rules() {
        let c = parse(&[
            "--secret",
            "s",
            "--public-group",
            "lobby",
            "--public-group",
            "news.",
        ])
        .unwrap();
        let rules = c.node_config().rules;
        let g = |s: &str| protocol::GroupId::new(s).unwrap();
        assert!(rules.is_public(&g("lobby")));
        assert!(rules.is_public(&g("lobby-2")));
        assert!(rules.is_public(&g("news.sport")));
        assert!(!rules.is_public(&g("private")));
        assert!(!rules.open);
    }

    #[test]
    fn user_caps_are_at_least_one() {
        assert!(parse(&["--secret", "s", "--max-user-connections", "0"]).is_err());
        assert!(parse(&["--secret", "s", "--max-user-groups", "0"]).is_err());
        assert!(parse(&["--secret", "s", "--max-connections", "0"]).is_ok());
    }
}
