//! `GET /metrics` (PROTOCOL.md §7) in Prometheus text format, with
//! prometheus-client. Hub numbers are read from hub-core's atomics at scrape
//! time by a collector, so nothing on the message path touches a second set
//! of counters.

use std::time::Duration;

use hub_core::Node;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api_duration: Histogram,
}

impl Metrics {
    pub fn new(node: Node) -> Self {
        let mut registry = Registry::default();
        // 50 µs to ~1.6 s.
        let api_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "wshub_api_request_duration_seconds",
            "Time to answer one server API request",
            api_duration.clone(),
        );
        registry.register_collector(Box::new(HubCollector { node }));
        Self {
            registry,
            api_duration,
        }
    }

    pub fn observe_api(&self, elapsed: Duration) {
        self.api_duration.observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        prometheus_text(&out)
    }
}

/// prometheus-client writes OpenMetrics; §7 promises the Prometheus text
/// format (0.0.4, the content type `/metrics` answers with). For what we
/// expose they differ in two places: a counter's family is named with its
/// `_total` (OpenMetrics names it without, so a 0.0.4 parser takes the
/// `_total` samples for an untyped metric of their own), and there is no
/// closing `# EOF`.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 16 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then_some((p, name, tail))
        });
        match described {
            Some((p, name, tail)) => {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counters_are_named_with_their_total_and_there_is_no_eof() {
        let open = "# HELP a_seconds Time.\n# TYPE a_seconds histogram\na_seconds_sum 0.0\n\
                    # HELP c Frames\n# TYPE c counter\nc_total 3\n\
                    # HELP g Open\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            prometheus_text(open),
            "# HELP a_seconds Time.\n# TYPE a_seconds histogram\na_seconds_sum 0.0\n\
             # HELP c_total Frames\n# TYPE c_total counter\nc_total 3\n\
             # HELP g Open\n# TYPE g gauge\ng 1\n"
        );
    }
}

#[derive(Debug)]
struct HubCollector {
    node: Node,
}

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.node.stats_snapshot();
        let gauges = [
            (
                "wshub_connections",
                "Open WebSocket connections",
                s.connections,
            ),
            ("wshub_users", "Users with at least one connection", s.users),
            ("wshub_groups", "Groups with at least one member", s.groups),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value as i64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        // The text encoder appends `_total` to counter names.
        let counters = [
            (
                "wshub_frames_received",
                "Frames received from clients",
                s.frames_in,
            ),
            (
                "wshub_frames_sent",
                "Frames written to clients",
                s.frames_out,
            ),
            (
                "wshub_bytes_received",
                "Payload bytes received from clients",
                s.bytes_in,
            ),
            (
                "wshub_bytes_sent",
                "Payload bytes written to clients",
                s.bytes_out,
            ),
            (
                "wshub_messages_delivered",
                "Message frames queued to connections",
                s.messages_delivered,
            ),
            (
                "wshub_slow_consumer_closes",
                "Connections closed because their queue was full",
                s.slow_consumer_closes,
            ),
            (
                "wshub_auth_failures",
                "Refused tokens, origins and API keys",
                s.auth_failures,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let held = ConstGauge::new(i64::try_from(self.node.held_messages()).unwrap_or(i64::MAX));
        held.encode(encoder.encode_descriptor(
            "wshub_history_messages",
            "Messages held in this process's memory for history (0 in cluster mode)",
            None,
            held.metric_type(),
        )?)?;
        let (recovered, reset) = self.node.stats().recoveries();
        let mut family = encoder.encode_descriptor(
            "wshub_recoveries",
            "Streams named in a resume, by whether they were recovered",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in [("recovered", recovered), ("reset", reset)] {
            let metric = ConstCounter::new(n);
            metric.encode(family.encode_family(&[("result", result)])?)?;
        }
        if self.node.is_clustered() {
            let up = ConstGauge::new(i64::from(self.node.broker_up()));
            up.encode(encoder.encode_descriptor(
                "wshub_broker_up",
                "1 while the cluster's broker (Redis) is reachable",
                None,
                up.metric_type(),
            )?)?;
            let reconnects = ConstCounter::new(self.node.broker_reconnects());
            reconnects.encode(encoder.encode_descriptor(
                "wshub_broker_reconnects",
                "Times the broker came back after an outage",
                None,
                reconnects.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
