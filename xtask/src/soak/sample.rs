//! Samples of the server processes every `--sample-secs`: RSS and threads
//! from `/proc/PID/status`, open files from `/proc/PID/fd`, and a few
//! gauges and counters of `/metrics`. The server does not expose its tokio
//! task count, so "tasks" is the OS thread count (`Threads:`), with the
//! open-connection gauge beside it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{api, Ctx, Phase};

#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub t_s: f64,
    pub phase: Phase,
    /// 1, 2: the servers; 0: Redis.
    pub proc: usize,
    pub rss_kib: u64,
    pub threads: u64,
    pub fds: u64,
    pub connections: f64,
    pub delivered_total: f64,
    pub frames_sent_total: f64,
    pub client_received_total: u64,
}

/// (VmRSS in KiB, Threads) of `pid`.
pub(crate) fn status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

pub(crate) fn fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// The value of the metric line named exactly `key`.
pub(crate) fn metric(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == key).then(|| value.parse().ok())?
        })
        .unwrap_or(f64::NAN)
}

pub(crate) async fn run(ctx: Arc<Ctx>) -> Vec<Sample> {
    let every = Duration::from_secs_f64(ctx.args.sample_secs.max(0.2));
    let mut tick = tokio::time::interval(every);
    let mut out = Vec::new();
    loop {
        tick.tick().await;
        let phase = *ctx.phase.borrow();
        let t_s = ctx.start.elapsed().as_secs_f64();
        let received = ctx.received.load(Ordering::Relaxed);
        for (i, (pid, &addr)) in ctx.pids.iter().zip(&ctx.servers).enumerate() {
            // Read each time: a drill may have restarted the process.
            let pid = pid.load(Ordering::SeqCst);
            let (rss_kib, threads) = status(pid);
            let text = match api(addr, "GET", "/metrics", None).await {
                Ok((200, _, t)) => t,
                _ => String::new(),
            };
            out.push(Sample {
                t_s,
                phase,
                proc: i + 1,
                rss_kib,
                threads,
                fds: fds(pid),
                connections: metric(&text, "wshub_connections"),
                delivered_total: metric(&text, "wshub_messages_delivered_total"),
                frames_sent_total: metric(&text, "wshub_frames_sent_total"),
                client_received_total: received,
            });
        }
        let redis_pid = ctx.redis_pid.load(Ordering::SeqCst);
        if redis_pid != 0 {
            let pid = redis_pid;
            let (rss_kib, threads) = status(pid);
            out.push(Sample {
                t_s,
                phase,
                proc: 0,
                rss_kib,
                threads,
                fds: fds(pid),
                connections: f64::NAN,
                delivered_total: f64::NAN,
                frames_sent_total: f64::NAN,
                client_received_total: received,
            });
        }
        if phase == Phase::Done {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_are_read_by_exact_name() {
        let text = "# HELP x\nwshub_connections 12\nwshub_connections_peak 99\n\
                    wshub_messages_delivered_total 3.5e3\n";
        assert_eq!(metric(text, "wshub_connections"), 12.0);
        assert_eq!(metric(text, "wshub_messages_delivered_total"), 3500.0);
        assert!(metric(text, "wshub_nothing").is_nan());
    }

    #[test]
    fn this_process_has_a_status() {
        let (rss, threads) = status(std::process::id());
        assert!(rss > 0 && threads > 0);
        assert!(fds(std::process::id()) > 0);
    }
}
