//! `wshub-cli`: the terminal chat client and scripting tool (PROTOCOL.md §9).
//!
//! Exit codes scripts can rely on: 0 success; 1 the server answered with an
//! error (its code and message on stderr), or closed the connection with
//! 1008; 2 bad arguments; 3 could not connect, was refused at the upgrade,
//! or (`listen --no-reconnect`) the connection dropped.

mod api_client;
mod chat;
mod connect;
mod listen;
mod resume;
mod send;
mod terminal;
mod token;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wshub-cli",
    version,
    about = "Chat and script against a wshub server",
    after_help = "Exit codes: 0 success; 1 the server answered with an error or closed the \
connection with 1008 (kicked, token expired); 2 bad arguments; 3 could not connect, refused \
at the upgrade, or the connection dropped under `listen --no-reconnect`.",
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Flags every subcommand takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// WebSocket URL of the server.
    #[arg(
        long,
        global = true,
        env = "WSHUB_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,
    /// Connection token (JWT). Without one, --secret mints one for --as USER,
    /// or, against a dev-mode server, --as USER alone is enough.
    #[arg(long, global = true, env = "WSHUB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Server secret, to mint tokens.
    #[arg(long, global = true, env = "WSHUB_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Server API key, for `push`.
    #[arg(long, global = true, env = "WSHUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// User to connect as when no --token is given.
    #[arg(long = "as", global = true, env = "WSHUB_USER", value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive chat: `@user text`, `#group text`, /join, /leave, /help, /quit.
    ///
    /// When the connection drops, chat reconnects with backoff (0.2 s doubling
    /// to 5 s) and resumes its streams, so messages sent meanwhile are shown
    /// while the server's history holds them; a stream that could not be
    /// recovered is reported on screen. It stops, with an error, when the
    /// server refuses the token (401/403) or closes with 1008 (kicked, token
    /// expired).
    Chat,
    /// Print every frame received as one JSON line.
    ///
    /// When the connection drops, listen reconnects with backoff (0.2 s
    /// doubling to 5 s) and resumes its streams: the new welcome, the replayed
    /// messages and the resume's ack are printed like any frame, and a stream
    /// that could not be recovered is named on stderr. It exits 1 when the
    /// server closes with 1008 (kicked, token expired) and 3 when the server
    /// refuses the token (401/403) or the first connection fails.
    Listen {
        /// Exit with code 3 when the connection drops instead of reconnecting.
        #[arg(long)]
        no_reconnect: bool,
    },
    /// Send BODY to every connection of a user; wait for the ack.
    Send {
        #[arg(long)]
        to: String,
        /// JSON, or any text (sent as a JSON string).
        body: String,
    },
    /// Publish BODY to a group you are a member of; wait for the ack.
    Publish {
        #[arg(long)]
        group: String,
        body: String,
    },
    /// Push BODY through the server API to a user, a group or everyone.
    Push {
        #[arg(long, conflicts_with_all = ["group", "all"], required_unless_present_any = ["group", "all"])]
        user: Option<String>,
        #[arg(long, conflicts_with = "all")]
        group: Option<String>,
        #[arg(long)]
        all: bool,
        body: String,
    },
    /// Mint a connection token with --secret.
    Token {
        #[arg(long)]
        user: String,
        /// Groups joined on connect, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime: 90s, 30m, 1h, 7d (or seconds).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    /// The server refused us at the upgrade (401/403): retrying won't help.
    pub refused: bool,
}

impl Failure {
    pub fn usage(m: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: m.into(),
            refused: false,
        }
    }
    pub fn server(m: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: m.into(),
            refused: false,
        }
    }
    pub fn connect(m: impl Into<String>) -> Self {
        Self {
            code: 3,
            message: m.into(),
            refused: false,
        }
    }
}

pub type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("wshub-cli: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wshub-cli: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let common = cli.common;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Chat => chat::run(&common).await,
            Command::Listen { no_reconnect } => listen::run(&common, !no_reconnect).await,
            Command::Send { to, body } => send::send(&common, &to, &body).await,
            Command::Publish { group, body } => send::publish(&common, &group, &body).await,
            Command::Push {
                user,
                group,
                all,
                body,
            } => api_client::push(&common, user.as_deref(), group.as_deref(), all, &body).await,
            Command::Token { user, groups, ttl } => token::run(&common, &user, &groups, &ttl),
        }
    });
    // Chat reads stdin on a blocking thread when it is not a terminal;
    // don't wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("wshub-cli: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
