//! The command line of a load process (`xtask load`): parsed by the load
//! process, and built and rendered by the bench driver, so both sides
//! share one typed description instead of agreeing on strings.

use std::net::{IpAddr, SocketAddr};

use super::spelling;

/// What a load process does with its connections once they are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Join the group (`--group`) and count the pushes that arrive.
    Subscribe,
    /// Hold the connections and nothing else, so the server's memory per
    /// connection can be read.
    Idle,
    /// Send to a partner connection at a fixed rate and count what arrives.
    Direct,
    /// Report how long the handshakes took and exit.
    Connect,
    /// Resume storm (`storm.rs`): connect once, note the group stream's
    /// position, disconnect; on "go" reconnect all at once with `resume=1`
    /// and check the replay of `--expect` messages.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    pub server: SocketAddr,
    /// Source address for this process's connections (127.x.y.z).
    #[arg(long)]
    pub source: IpAddr,
    #[arg(long)]
    pub conns: usize,
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Token secret; none for the baselines, which take no token.
    #[arg(long)]
    pub secret: Option<String>,
    /// User id prefix, unique per process.
    #[arg(long)]
    pub prefix: String,
    /// subscribe: the group the connections join (named in their tokens).
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// direct: user k's partner is `<partner-prefix>k`, a user of another
    /// load process (on another server of a cluster); without it the
    /// partner is user k^1 of this process.
    #[arg(long)]
    pub partner_prefix: Option<String>,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// How a run after "go" proceeds: the part of a load process's command
/// line that each scenario chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Tuning {
    /// Messages each connection should receive before the run is done.
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// direct: messages per second each connection sends.
    #[arg(long, default_value_t = 10)]
    pub rate: u64,
    /// direct: seconds to send for.
    #[arg(long, default_value_t = 5)]
    pub secs: u64,
    /// Microseconds the run loop sleeps when no socket is ready.
    #[arg(long, default_value_t = 250)]
    pub poll_us: u64,
    /// Keep the connections open after the result until "stop" (or stdin
    /// closes), so none closes while the driver still measures.
    #[arg(long)]
    pub hold: bool,
}

/// The same values as the flags' defaults (a test holds them together),
/// for the scenarios that never say "go" and so never use them.
impl Default for Tuning {
    fn default() -> Self {
        Self {
            expect: 0,
            rate: 10,
            secs: 5,
            poll_us: 250,
            hold: false,
        }
    }
}

impl LoadArgs {
    /// The arguments after `xtask load` that parse back into `self`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--server".into(),
            self.server.to_string(),
            "--source".into(),
            self.source.to_string(),
            "--conns".into(),
            self.conns.to_string(),
            "--mode".into(),
            spelling(&self.mode),
            "--prefix".into(),
            self.prefix.clone(),
            "--group".into(),
            self.group.clone(),
        ];
        if let Some(secret) = &self.secret {
            a.extend(["--secret".into(), secret.clone()]);
        }
        if let Some(partners) = &self.partner_prefix {
            a.extend(["--partner-prefix".into(), partners.clone()]);
        }
        let t = &self.tuning;
        a.extend([
            "--expect".into(),
            t.expect.to_string(),
            "--rate".into(),
            t.rate.to_string(),
            "--secs".into(),
            t.secs.to_string(),
            "--poll-us".into(),
            t.poll_us.to_string(),
        ]);
        if t.hold {
            a.push("--hold".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[String]) -> Result<LoadArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("load".to_owned()).chain(args.iter().cloned()))
            .map(|c| c.load)
    }

    #[test]
    fn rendered_arguments_parse_back_to_the_same_value() {
        for (mode, secret, partner_prefix) in [
            (Mode::Subscribe, Some("s3cret".to_owned()), None),
            (Mode::Direct, None, Some("p4u".to_owned())),
            (Mode::Connect, None, None),
            (Mode::Idle, Some("x".to_owned()), None),
            (Mode::Resume, Some("y".to_owned()), None),
        ] {
            let args = LoadArgs {
                server: "127.0.0.1:4000".parse().unwrap(),
                source: "127.1.2.3".parse().unwrap(),
                conns: 17,
                mode,
                secret,
                prefix: "p3u".into(),
                group: "bench-100".into(),
                partner_prefix,
                tuning: Tuning {
                    expect: 9,
                    rate: 3,
                    secs: 2,
                    poll_us: 100,
                    hold: mode == Mode::Subscribe,
                },
            };
            assert_eq!(parse(&args.to_args()).unwrap(), args);
        }
    }

    #[test]
    fn default_tuning_is_the_flags_defaults() {
        let bare = ["--server", "127.0.0.1:1", "--source", "127.0.0.2"]
            .into_iter()
            .chain(["--conns", "1", "--mode", "idle", "--prefix", "p"])
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(parse(&bare).unwrap().tuning, Tuning::default());
    }

    #[test]
    fn an_unknown_mode_is_refused() {
        let args = ["--server", "127.0.0.1:1", "--source", "127.0.0.2"]
            .into_iter()
            .chain(["--conns", "1", "--mode", "subscrbe", "--prefix", "p"])
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert!(parse(&args).is_err());
    }
}
