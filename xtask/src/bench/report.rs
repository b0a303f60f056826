//! What a run reports: latency percentiles, the machine it ran on, and the
//! table printed at the end (the JSON goes to `target/bench/`).

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A latency histogram in microseconds, up to two minutes, 3 significant
/// digits: the one shape every load process records and the run merges.
pub fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 120_000_000, 3)?)
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "samples": h.len()})
}

pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel.trim(),
        "mem_kib": mem,
    })
}

pub fn print_table(report: &Value) {
    let m = &report["machine"];
    println!(
        "\nwshub bench on {} ({} cores, kernel {})",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?")
    );
    println!(
        "{:<8} {:<18} {:>14} {:>10} {:>10} {:>10} {:>12}",
        "scenario", "target", "rate", "p50 ms", "p99 ms", "p999 ms", "KiB/conn"
    );
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let find = |scenario: &str, target: &str, size: Option<u64>| {
        results
            .iter()
            .find(|r| {
                r["scenario"] == scenario
                    && r["target"] == target
                    && size.is_none_or(|s| r["connections"].as_u64() == Some(s))
            })
            .cloned()
    };
    for r in &results {
        let lat = &r["latency"];
        let rate = r["deliveries_per_s"]
            .as_f64()
            .or(r["connects_per_s"].as_f64());
        let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "{:<8} {:<18} {:>14} {:>10} {:>10} {:>10} {:>12}",
            r["scenario"].as_str().unwrap_or(""),
            match (r["scenario"].as_str(), r["connections"].as_u64()) {
                (Some("idle"), Some(n)) => format!("{} {n}", r["target"].as_str().unwrap_or("")),
                _ => r["target"].as_str().unwrap_or("").to_owned(),
            },
            rate.map_or("-".to_owned(), |x| format!("{x:.0}/s")),
            f(&lat["p50_ms"]),
            f(&lat["p99_ms"]),
            f(&lat["p999_ms"]),
            f(&r["kib_per_connection"]),
        );
    }
    // wshub as a fraction of each baseline.
    for scenario in ["burst", "paced"] {
        if let Some(w) = find(scenario, "wshub", None) {
            for base in ["minimal-hub", "raw-limit"] {
                if let Some(b) = find(scenario, base, None) {
                    let (wr, br) = (
                        w["deliveries_per_s"].as_f64().unwrap_or(0.0),
                        b["deliveries_per_s"].as_f64().unwrap_or(0.0),
                    );
                    if br > 0.0 {
                        println!(
                            "{scenario}: wshub delivers at {:.0}% of {base}",
                            100.0 * wr / br
                        );
                    }
                }
            }
        }
    }
    println!(
        "load side used {:.1} CPU-seconds in all",
        report["load_cpu_seconds"].as_f64().unwrap_or(0.0)
    );
}
