//! The soak's verdict: growth of RSS, open files and threads, the checker's
//! tallies, a summary on stderr, and `target/soak/<stamp>.json` with the
//! samples in `target/soak/<stamp>.csv`.
//!
//! Growth is over the last half of the load phase: the level at its end
//! (the mean of the samples in the last tenth of the load) over the level
//! at its middle (the mean of the samples from 45 to 55 % of it), minus
//! one. The first half is warm-up (buffers, allocator arenas, histories
//! filling up to `--history`); the drain after the load is left out.
//! Levels rather than single samples, so that one sample taken while a
//! slow reader's backlog was at its peak does not decide.

use std::fmt::Write as _;

use anyhow::bail;
use serde_json::{json, Value};

use super::load::Outcome;
use super::sample::Sample;
use super::{Phase, SoakArgs};

/// Fewest samples a level is the mean of; with fewer (a load of under
/// about a minute at the default `--sample-secs`) growth is not judged.
const MIN_SAMPLES: usize = 3;

/// (level at the middle, level at the end, growth in %) of one quantity
/// of one process, from its samples taken while the load ran; `None` with
/// too few samples to tell.
pub(crate) fn growth(points: &[(f64, f64)], load_s: f64) -> Option<(f64, f64, f64)> {
    let mean = |from: f64, to: f64| {
        let v: Vec<f64> = points
            .iter()
            // A zero is a sample that could not be read, not a level.
            .filter(|(t, v)| *t >= from * load_s && *t <= to * load_s && *v > 0.0)
            .map(|(_, v)| *v)
            .collect();
        (v.len() >= MIN_SAMPLES).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let middle = mean(0.45, 0.55)?;
    let end = mean(0.9, 1.0)?;
    let pct = if middle > 0.0 {
        (end / middle - 1.0) * 100.0
    } else {
        0.0
    };
    Some((middle, end, pct))
}

/// `YYYYMMDDTHHMMSSZ` of now (UTC).
fn stamp() -> String {
    let secs = test_support::now();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "t_s,phase,process,rss_kib,threads,fds,connections,delivered_total,\
         delivered_per_s,frames_sent_total,client_received_total,client_received_per_s\n",
    );
    let mut prev: std::collections::HashMap<usize, (f64, f64, u64)> = Default::default();
    for s in samples {
        let (rate, crate_) = match prev.get(&s.proc) {
            Some(&(t, d, c)) if s.t_s > t => (
                (s.delivered_total - d) / (s.t_s - t),
                (s.client_received_total - c) as f64 / (s.t_s - t),
            ),
            _ => (f64::NAN, f64::NAN),
        };
        prev.insert(s.proc, (s.t_s, s.delivered_total, s.client_received_total));
        let name = if s.proc == 0 {
            "redis".to_owned()
        } else {
            format!("server{}", s.proc)
        };
        let _ = writeln!(
            out,
            "{:.2},{:?},{name},{},{},{},{},{},{:.1},{},{},{:.1}",
            s.t_s,
            s.phase,
            s.rss_kib,
            s.threads,
            s.fds,
            s.connections,
            s.delivered_total,
            rate,
            s.frames_sent_total,
            s.client_received_total,
            crate_
        );
    }
    out
}

pub(crate) fn finish(
    args: &SoakArgs,
    outcome: Outcome,
    exits: Vec<Value>,
    panics: Vec<String>,
    log_errors: u64,
) -> anyhow::Result<()> {
    let load_s = args.load_secs();
    let tally = &outcome.ctx.tally;
    let counts = tally.counts();
    let failures = tally.failures();
    let mut verdicts = Vec::new();
    let mut growth_rows = Vec::new();
    let procs: std::collections::BTreeSet<usize> = outcome.samples.iter().map(|s| s.proc).collect();
    // A server a drill killed and restarted during the load: its samples
    // start again from an empty process, so the middle and the end compare two
    // processes; it is shown, not judged (the other server is).
    let restarted: std::collections::BTreeMap<usize, f64> = outcome
        .drills
        .iter()
        .filter(|d| d["drill"] == "server-kill")
        .filter_map(|d| {
            Some((
                d["detail"]["server"].as_u64()? as usize,
                d["fault_removed_s"].as_f64()?,
            ))
        })
        .collect();
    // Several servers: clients resume on a random one, so each server's
    // open files follow the clients it happens to hold (±6 % in a 2-minute
    // run); their sum is what must stay flat, and is judged instead.
    let servers = procs.iter().filter(|p| **p != 0).count();
    let (mut fds_middle, mut fds_end) = (0.0, 0.0);
    for p in procs {
        let of = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
            outcome
                .samples
                .iter()
                .filter(|s| s.proc == p && s.phase == Phase::Load)
                .map(|s| (s.t_s, f(s)))
                .collect()
        };
        let name = if p == 0 {
            "redis".to_owned()
        } else {
            format!("server{p}")
        };
        for (what, points) in [
            ("rss_kib", of(&|s| s.rss_kib as f64)),
            ("fds", of(&|s| s.fds as f64)),
            ("threads", of(&|s| s.threads as f64)),
        ] {
            let Some((middle, end, pct)) = growth(&points, load_s) else {
                growth_rows.push(json!({
                    "process": name, "what": what, "judged": false,
                    "note": format!("fewer than {MIN_SAMPLES} samples in a window"),
                }));
                continue;
            };
            // Redis is shown, not judged: its memory is the history it keeps.
            // With drills no server is: a killed server's clients move to
            // the other one, whose memory grows with them, and a two-minute
            // run has no steady state to compare (the long runs without
            // drills judge flatness).
            let judged = p != 0 && outcome.drills.is_empty() && !(what == "fds" && servers > 1);
            if p != 0 && what == "fds" {
                fds_middle += middle;
                fds_end += end;
            }
            let row = Growth {
                process: &name,
                what,
                middle,
                end,
                pct,
                judged,
                restarted_at_s: restarted.get(&p).copied(),
            };
            row.record(args, &mut verdicts, &mut growth_rows);
        }
    }
    if servers > 1 && fds_middle > 0.0 {
        let pct = (fds_end / fds_middle - 1.0) * 100.0;
        let row = Growth {
            process: "servers",
            what: "fds",
            middle: fds_middle,
            end: fds_end,
            pct,
            judged: outcome.drills.is_empty(),
            restarted_at_s: None,
        };
        row.record(args, &mut verdicts, &mut growth_rows);
    }
    for (kind, (n, _)) in &failures {
        verdicts.push(format!("{n} × {kind}"));
    }
    for p in &panics {
        verdicts.push(format!("panic in the log: {p}"));
    }
    for e in &exits {
        if e["ok"] != true {
            verdicts.push(format!("server exit: {e}"));
        }
    }
    let pass = verdicts.is_empty();

    let dir = crate::cmd::root().join("target").join("soak");
    std::fs::create_dir_all(&dir)?;
    let mode = match (args.cluster, args.drills) {
        (true, true) => "cluster-drills",
        (true, false) => "cluster",
        _ => "single",
    };
    let base = format!("{}-{mode}", stamp());
    let json_path = dir.join(format!("{base}.json"));
    let csv_path = dir.join(format!("{base}.csv"));
    let received = outcome
        .ctx
        .received
        .load(std::sync::atomic::Ordering::Relaxed);
    let peak = |f: &dyn Fn(&Sample) -> u64| {
        outcome
            .samples
            .iter()
            .filter(|s| s.proc != 0)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    let doc = json!({
        "mode": mode,
        "pass": pass,
        "verdicts": verdicts,
        "args": format!("{args:?}"),
        "load_s": load_s,
        "elapsed_s": outcome.elapsed_s,
        "servers": outcome.ctx.servers.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "messages_received_by_clients": received,
        "checked_streams_at_end": outcome.checked_streams,
        "not_connected_at_end": outcome.not_connected_at_end,
        "counts": counts,
        "failures": failures.iter().map(|(k, (n, ex))| (k.clone(), json!({"count": n, "examples": ex}))).collect::<serde_json::Map<_, _>>(),
        "recovered_false": tally.resets(),
        "drills": outcome.drills,
        "growth": growth_rows,
        "growth_rule": "over the last half of the load: the mean of its last tenth over the mean from 45 to 55 % of it, per server process; RSS fails only past --min-rss-growth-kib too; threads stand for tasks (the server does not expose a tokio task count)",
        "peak": {"rss_kib": peak(&|s| s.rss_kib), "fds": peak(&|s| s.fds), "threads": peak(&|s| s.threads)},
        "server_exits": exits,
        "panics": panics,
        "server_log_error_lines": log_errors,
        "csv": csv_path.display().to_string(),
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    std::fs::write(&csv_path, csv(&outcome.samples))?;

    eprintln!(
        "\nsoak ({mode}): {:.0} s of load, {} clients",
        load_s, args.clients
    );
    eprintln!("  messages received by clients: {received}");
    for (k, v) in &counts {
        eprintln!("  {k:<36} {v}");
    }
    eprintln!(
        "  streams checked at the end: {}; not connected at the end: {}",
        outcome.checked_streams, outcome.not_connected_at_end
    );
    eprintln!(
        "  growth over the last half of the load (mean at 45-55 % -> mean of the last 10 %):"
    );
    for g in &growth_rows {
        let (process, what) = (
            g["process"].as_str().unwrap_or_default(),
            g["what"].as_str().unwrap_or_default(),
        );
        if let Some(note) = g["note"].as_str() {
            eprintln!("    {process:<8} {what:<8} not judged: {note}");
            continue;
        }
        let (middle, end) = (
            g["middle_mean"].as_f64().unwrap_or(0.0),
            g["end_mean"].as_f64().unwrap_or(0.0),
        );
        eprintln!(
            "    {process:<8} {what:<8} {middle:>12.1} -> {end:>12.1}  {:>+6.2} % {:>+8.0}{}",
            g["growth_pct"].as_f64().unwrap_or(0.0),
            end - middle,
            if g["judged"] == true {
                if g["ok"] == true {
                    "  ok"
                } else {
                    "  FAIL"
                }
            } else if g["restarted_at_s"].is_number() {
                "  (shown only: restarted by a drill)"
            } else if !outcome.drills.is_empty() && g["process"] != "redis" {
                "  (shown only: drills move clients between servers)"
            } else {
                "  (shown only)"
            }
        );
    }
    for d in &outcome.drills {
        let ms = |k: &str| {
            d[k].as_f64()
                .map_or("never".into(), |m| format!("{m:.0} ms"))
        };
        eprintln!(
            "  drill {:<12} at {:>6.1} s, fault {:>5.1} s, readyz after {:>8}, healed after {:>8}, {}",
            d["drill"].as_str().unwrap_or_default(),
            d["started_s"].as_f64().unwrap_or(0.0),
            d["fault_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            ms("ready_after_ms"),
            ms("healed_after_ms"),
            d["during"]
        );
    }
    for (kind, (n, ex)) in &failures {
        eprintln!("  FAIL {n} × {kind}");
        for e in ex {
            eprintln!("       {e}");
        }
    }
    for p in &panics {
        eprintln!("  PANIC {p}");
    }
    eprintln!("  report: {}", json_path.display());
    eprintln!("  samples: {}", csv_path.display());
    if !pass {
        bail!("soak ({mode}) failed: {}", verdicts.join("; "));
    }
    eprintln!("soak ({mode}): PASS");
    Ok(())
}

/// One process's growth of one quantity over the load, as judged.
struct Growth<'a> {
    process: &'a str,
    what: &'a str,
    middle: f64,
    end: f64,
    pct: f64,
    judged: bool,
    restarted_at_s: Option<f64>,
}

impl Growth<'_> {
    /// Adds its row to the report, and a verdict when it is judged and
    /// grew past `--max-growth-pct` (RSS: and past `--min-rss-growth-kib`).
    fn record(&self, args: &SoakArgs, verdicts: &mut Vec<String>, rows: &mut Vec<Value>) {
        let max_pct = args.max_growth_pct;
        let floor = if self.what == "rss_kib" {
            args.min_rss_growth_kib
        } else {
            0.0
        };
        let ok = !self.judged || self.pct <= max_pct || self.end - self.middle <= floor;
        if !ok {
            verdicts.push(format!(
                "{} {} grew {:.1} % (> {max_pct} %), {:.0} -> {:.0} (+{:.0}, floor {floor:.0})",
                self.process,
                self.what,
                self.pct,
                self.middle,
                self.end,
                self.end - self.middle
            ));
        }
        rows.push(json!({
            "process": self.process, "what": self.what, "middle_mean": self.middle,
            "end_mean": self.end, "growth_pct": self.pct, "floor": floor, "judged": self.judged,
            "ok": ok, "restarted_at_s": self.restarted_at_s,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_compares_the_end_of_the_load_with_its_middle() {
        // 0..100 s: a warm-up ramp, flat at 100 from the middle, then 104
        // over the last tenth.
        let pts: Vec<(f64, f64)> = (0..=100)
            .map(|t| {
                let t = t as f64;
                let v = if t < 40.0 {
                    t * 2.5
                } else if t < 90.0 {
                    100.0
                } else {
                    104.0
                };
                (t, v)
            })
            .collect();
        let (middle, end, pct) = growth(&pts, 100.0).unwrap();
        assert_eq!((middle, end), (100.0, 104.0));
        assert!((pct - 4.0).abs() < 1e-9);
        assert!(growth(&[], 100.0).is_none());
        // Too few samples in a window, or only unreadable (zero) ones.
        let sparse: Vec<(f64, f64)> = [(50.0, 100.0), (95.0, 104.0)].into();
        assert!(growth(&sparse, 100.0).is_none());
        let unread: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(t, v)| (t, if t < 60.0 { 0.0 } else { v }))
            .collect();
        assert!(growth(&unread, 100.0).is_none());
    }

    /// RSS fails only past both the percentage and the KiB floor; open
    /// files and threads on the percentage alone.
    #[test]
    fn rss_growth_fails_only_past_the_floor_too() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            soak: SoakArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["soak"]).soak;
        let verdicts = |what: &str, middle: f64, end: f64| {
            let g = Growth {
                process: "server1",
                what,
                middle,
                end,
                pct: (end / middle - 1.0) * 100.0,
                judged: true,
                restarted_at_s: None,
            };
            let (mut verdicts, mut rows) = (Vec::new(), Vec::new());
            g.record(&args, &mut verdicts, &mut rows);
            verdicts.len()
        };
        // +6 %: 1,020 KiB, one allocator step; 3,000 KiB, more than that.
        assert_eq!(verdicts("rss_kib", 17_000.0, 18_020.0), 0);
        assert_eq!(verdicts("rss_kib", 50_000.0, 53_000.0), 1);
        assert_eq!(verdicts("rss_kib", 17_000.0, 17_500.0), 0);
        // Past the floor but under the percentage: not a failure either.
        assert_eq!(verdicts("rss_kib", 100_000.0, 104_000.0), 0);
        assert_eq!(verdicts("fds", 200.0, 212.0), 1);
        assert_eq!(verdicts("fds", 200.0, 205.0), 0);
    }

    #[test]
    fn the_stamp_is_a_utc_date_and_time() {
        let s = stamp();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T');
    }
}
