//! What a load process and the bench driver say to each other, one line
//! at a time: "go" and "stop" on the load process's stdin; a `ready` line
//! once its connections are open and a `result` line at the end on its
//! stdout, each a tag and a JSON object.

use hdrhistogram::Histogram;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A line a load process prints for the driver: `TAG {json}`.
pub trait Line: Serialize + DeserializeOwned {
    const TAG: &'static str;

    fn render(&self) -> anyhow::Result<String> {
        Ok(format!("{} {}", Self::TAG, serde_json::to_string(self)?))
    }

    /// `Some` for a line with this tag; other lines are not ours to read.
    fn parse(line: &str) -> Option<anyhow::Result<Self>> {
        let rest = line.strip_prefix(Self::TAG)?.strip_prefix(' ')?;
        Some(serde_json::from_str(rest.trim()).map_err(Into::into))
    }
}

/// All connections are open (or failed to open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub conns: u64,
    pub failures: u64,
    /// From the first handshake started to the last one done.
    pub connect_secs: f64,
    /// Each handshake's duration in microseconds: the whole histogram, not
    /// its percentiles, so the driver can take percentiles over every
    /// process's connections together.
    pub connect_hist_us: Buckets,
}

impl Line for Ready {
    const TAG: &'static str = "ready";
}

/// What the process saw after "go". A connect-rate process never gets a
/// "go" and reports only its CPU time, so every other field defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadResult {
    pub received: u64,
    /// Receive time of the last message, wall-clock nanoseconds.
    pub last_ns: u64,
    /// Send to kernel receive time, microseconds (see `receiver.rs`).
    pub hist_us: Buckets,
    /// Send to the time the process read the frame, microseconds.
    pub read_hist_us: Buckets,
    pub shared_stamp: u64,
    pub cpu_s: f64,
    /// Bytes of the data frames received, headers included.
    pub frame_bytes: u64,
}

impl Line for LoadResult {
    const TAG: &'static str = "result";
}

/// What a resume-storm process saw after "go" (`storm.rs`): its clients'
/// acks, what each replay held, and when the storm started and ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StormResult {
    pub clients: u64,
    /// Acks of the resume frame, and how many said the stream was recovered.
    pub acks: u64,
    pub recovered: u64,
    /// Message frames replayed before the ack, each seq counted once.
    pub replayed: u64,
    /// Frames whose seq was not after the last one the client had.
    pub duplicates: u64,
    /// Seqs skipped between replayed frames, or missing at the ack.
    pub gaps: u64,
    /// Clients that failed to connect, resume or get an ack in time.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall-clock nanoseconds: the first reconnect started, the last ack read.
    pub first_start_ns: u64,
    pub last_ack_ns: u64,
    /// Per client, reconnect start to ack read, microseconds.
    pub ack_hist_us: Buckets,
    pub cpu_s: f64,
}

impl Line for StormResult {
    const TAG: &'static str = "storm";
}

/// A histogram's recorded values as `[value, count]` pairs: compact, and
/// exact enough to merge, since each value is already the histogram's own
/// rounding of what was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn add_to(&self, h: &mut Histogram<u64>) -> anyhow::Result<()> {
        for &(v, n) in &self.0 {
            h.record_n(v.max(1), n)?;
        }
        Ok(())
    }
}

/// What the driver tells a load process on its stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Start the run: send, or count what arrives.
    Go,
    /// End the run now and print the result.
    Stop,
}

impl Order {
    pub fn word(self) -> &'static str {
        match self {
            Order::Go => "go",
            Order::Stop => "stop",
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        match line.trim() {
            "go" => Some(Order::Go),
            "stop" => Some(Order::Stop),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::latency_histogram;

    #[test]
    fn lines_parse_back_and_ignore_other_tags() {
        let r = Ready {
            conns: 10,
            failures: 0,
            connect_secs: 0.5,
            connect_hist_us: Buckets(vec![(100, 3), (2000, 7)]),
        };
        let line = r.render().unwrap();
        assert!(line.starts_with("ready {"));
        assert_eq!(Ready::parse(&line).unwrap().unwrap(), r);
        assert!(LoadResult::parse(&line).is_none());
        assert!(Ready::parse("readyish {}").is_none());
    }

    #[test]
    fn a_connect_result_needs_only_its_cpu_time() {
        let r = LoadResult::parse(r#"result {"cpu_s":1.5}"#)
            .unwrap()
            .unwrap();
        assert_eq!(r.cpu_s, 1.5);
        assert_eq!(r.received, 0);
        assert!(r.hist_us.0.is_empty());
    }

    #[test]
    fn merged_buckets_give_percentiles_over_all_samples() {
        // One process saw fast handshakes, the other slow ones: the median
        // of all of them is neither process's median.
        let mut fast = latency_histogram().unwrap();
        let mut slow = latency_histogram().unwrap();
        for _ in 0..90 {
            fast.record(1_000).unwrap();
        }
        for _ in 0..10 {
            slow.record(50_000).unwrap();
        }
        let mut all = latency_histogram().unwrap();
        for h in [&fast, &slow] {
            let wire = serde_json::to_string(&Buckets::of(h)).unwrap();
            serde_json::from_str::<Buckets>(&wire)
                .unwrap()
                .add_to(&mut all)
                .unwrap();
        }
        assert_eq!(all.len(), 100);
        assert!(all.value_at_quantile(0.5) < 1_010);
        assert!(all.value_at_quantile(0.95) > 49_000);
    }

    #[test]
    fn orders_round_trip() {
        for o in [Order::Go, Order::Stop] {
            assert_eq!(Order::parse(&format!("{}\n", o.word())), Some(o));
        }
        assert_eq!(Order::parse("gone"), None);
    }
}
