//! The network namespace the drills run `redis-server` in (`--drills`):
//! `wshub-soak-<pid>`, a veth pair `wsk<pid>h` (host side,
//! `10.231.X.1/30`) and `wsk<pid>n` (inside, `10.231.X.2/30`), `lo` up
//! inside. The servers reach Redis through the veth, so that a shaping
//! qdisc on it delays and drops what goes between them. Everything stays
//! on this machine; the namespace and the pair are deleted when the guard
//! is dropped (on success, on error and on a panic that unwinds).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

const IP: &str = "/usr/sbin/ip";
const TC: &str = "/usr/sbin/tc";

/// The delay and loss of the link drill: `netem delay 40ms 20ms loss 3%`.
pub(crate) const NETEM: &[&str] = &["netem", "delay", "40ms", "20ms", "loss", "3%"];
/// The same delay when the kernel has no `sch_netem` (some VM kernels,
/// this one): held by the relay the servers reach Redis through (link.rs).
pub(crate) const DELAY_MS: (u64, u64) = (40, 20);
/// The same loss without netem: per cent of packets dropped at random.
pub(crate) const LOSS_PERCENT: u32 = 3;

/// A classic-BPF program, in `tc`'s `bytecode` form, for a `cls_bpf`
/// filter in direct-action mode that drops `percent` of packets at random
/// and lets the rest pass. It loads the kernel's per-packet random number
/// (`SKF_AD_RANDOM`, an ancillary load at offset -0x1000 + 56) and drops
/// when it is at or above `(1 - percent/100) * 2^32`: `TC_ACT_SHOT` (2),
/// else `TC_ACT_UNSPEC` (-1, the default: pass). Needs no `act_gact`
/// module and no eBPF compiler, only `cls_bpf`, which kernels without
/// netem still tend to have.
pub(crate) fn random_drop_bytecode(percent: u32) -> String {
    const LD_W_ABS: u32 = 0x20;
    const JGE_K: u32 = 0x35;
    const RET_K: u32 = 0x06;
    const SKF_AD_RANDOM: u32 = 0xffff_f000 + 56;
    let keep = ((100 - percent.min(100)) as u64 * (1u64 << 32) / 100).min(u32::MAX as u64);
    format!(
        "4,{LD_W_ABS} 0 0 {SKF_AD_RANDOM},{JGE_K} 0 1 {keep},{RET_K} 0 0 2,{RET_K} 0 0 {}",
        u32::MAX
    )
}

/// (packets, dropped) from the clsact qdisc's lines of `tc -s qdisc show`:
/// `qdisc clsact ffff: …` then ` Sent B bytes P pkt (dropped D, …`.
fn clsact_counts(out: &str) -> Option<(u64, u64)> {
    let mut lines = out.lines().skip_while(|l| !l.starts_with("qdisc clsact"));
    lines.next()?;
    let words: Vec<&str> = lines.next()?.split_whitespace().collect();
    let at = |w: &str| words.iter().position(|x| *x == w);
    let pkts = words.get(at("pkt")?.checked_sub(1)?)?.parse().ok()?;
    let dropped = words
        .get(at("(dropped")? + 1)?
        .trim_end_matches(',')
        .parse()
        .ok()?;
    Some((pkts, dropped))
}

/// How [`Netns::shape`] made the link bad.
pub(crate) enum Shaping {
    /// netem: delay and loss both, on the veth.
    Netem,
    /// Loss on the veth (classic BPF); the delay is the caller's to add.
    LossOnly,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(IP)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {IP}"))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tc(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(TC)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {TC}"))?;
    if !out.status.success() {
        bail!(
            "`tc {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The third octet of `10.231.X.0/30`: derived from `seed` (the pid), the
/// first one no address on this machine uses yet.
pub(crate) fn pick_subnet(seed: u32, in_use: &str) -> Option<u8> {
    (0..250u32)
        .map(|k| ((seed + k) % 250 + 1) as u8)
        .find(|x| !in_use.contains(&format!("10.231.{x}.")))
}

/// A namespace, its veth pair and the script that starts a program in it;
/// removed on drop.
pub(crate) struct Netns {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_addr: String,
    pub ns_addr: String,
    dir: PathBuf,
    created_ns: bool,
    created_link: bool,
}

impl Netns {
    /// Creates `wshub-soak-<pid>` and its veth pair. Fails with what `ip`
    /// said, and why it is needed, when it cannot (not root, no netns).
    pub fn create() -> anyhow::Result<Netns> {
        let pid = std::process::id();
        let in_use = ip(&["-o", "addr", "show"]).context(
            "--drills runs redis-server in a network namespace and needs `ip` (iproute2) \
             at /usr/sbin/ip",
        )?;
        let x = pick_subnet(pid, &in_use).context("no free 10.231.X.0/30 subnet")?;
        let mut ns = Netns {
            name: format!("wshub-soak-{pid}"),
            host_if: format!("wsk{pid}h"),
            ns_if: format!("wsk{pid}n"),
            host_addr: format!("10.231.{x}.1"),
            ns_addr: format!("10.231.{x}.2"),
            dir: std::env::temp_dir().join(format!("wshub-soak-{pid}")),
            created_ns: false,
            created_link: false,
        };
        ip(&["netns", "add", &ns.name]).context(
            "--drills needs to create a network namespace (`ip netns add`), which takes \
             root (CAP_SYS_ADMIN and CAP_NET_ADMIN); run the soak as root or without --drills",
        )?;
        ns.created_ns = true;
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ])?;
        ns.created_link = true;
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_addr),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let n = ns.name.clone();
        ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{}/30", ns.ns_addr),
            "dev",
            &ns.ns_if,
        ])?;
        ip(&["-n", &n, "link", "set", &ns.ns_if, "up"])?;
        ip(&["-n", &n, "link", "set", "lo", "up"])?;
        std::fs::create_dir_all(&ns.dir)?;
        Ok(ns)
    }

    /// A script that runs `bin` with its arguments inside the namespace
    /// (`ip netns exec` execs, so the pid is the program's own).
    pub fn wrapper(&self, bin: &Path) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "prog".into());
        let path = self.dir.join(format!("{name}-in-netns"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec {IP} netns exec {} {} \"$@\"\n",
                self.name,
                bin.display()
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    /// Delays and drops on both ends of the pair with `netem` when the
    /// kernel has it; else drops only ([`random_drop_bytecode`] on each
    /// end's egress) and says so, for the caller to delay.
    pub fn shape(&self) -> anyhow::Result<(Shaping, String)> {
        match self.tc_each(&["qdisc", "add"], &[&["root"], NETEM].concat()) {
            Ok(()) => Ok((Shaping::Netem, NETEM.join(" "))),
            Err(e) if format!("{e:#}").contains("unknown") => {
                self.unshape();
                let code = random_drop_bytecode(LOSS_PERCENT);
                self.tc_each(&["qdisc", "add"], &["clsact"])?;
                self.tc_each(
                    &["filter", "add"],
                    &["egress", "bpf", "bytecode", &code, "da"],
                )?;
                Ok((
                    Shaping::LossOnly,
                    format!("cls_bpf random drop of {LOSS_PERCENT}% (bytecode '{code}')"),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Packets that crossed the drop filters and packets they dropped, both
    /// ends together (`tc -s qdisc show`'s clsact counters), to show in the
    /// report that the link was lossy; None when they cannot be read.
    pub fn drop_counts(&self) -> Option<(u64, u64)> {
        let mut total = (0, 0);
        for args in [
            vec!["-s", "qdisc", "show", "dev", &self.host_if],
            vec!["-n", &self.name, "-s", "qdisc", "show", "dev", &self.ns_if],
        ] {
            let out = Command::new(TC).args(&args).output().ok()?;
            let (sent, dropped) = clsact_counts(&String::from_utf8_lossy(&out.stdout))?;
            total.0 += sent;
            total.1 += dropped;
        }
        Some(total)
    }

    /// `tc OBJ dev END REST` on the host's end of the pair, then inside.
    fn tc_each(&self, obj: &[&str], rest: &[&str]) -> anyhow::Result<()> {
        tc(&[obj, &["dev", &self.host_if], rest].concat())?;
        tc(&[&["-n", &self.name][..], obj, &["dev", &self.ns_if], rest].concat())
    }

    /// Removes what [`shape`](Self::shape) added (none: no error).
    pub fn unshape(&self) {
        for q in ["root", "clsact"] {
            let _ = tc(&["qdisc", "del", "dev", &self.host_if, q]);
            let _ = tc(&["-n", &self.name, "qdisc", "del", "dev", &self.ns_if, q]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.created_link {
            // Deleting one end deletes the pair (the other end may be in the
            // namespace already).
            if ip(&["link", "del", &self.host_if]).is_err() {
                let _ = ip(&["-n", &self.name, "link", "del", &self.ns_if]);
            }
        }
        if self.created_ns {
            if let Err(e) = ip(&["netns", "del", &self.name]) {
                eprintln!(
                    "soak: could not delete network namespace {}: {e:#}",
                    self.name
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_in_use_is_skipped() {
        assert_eq!(pick_subnet(0, ""), Some(1));
        assert_eq!(pick_subnet(249, ""), Some(250));
        assert_eq!(pick_subnet(250, ""), Some(1));
        let used = "3: wsk1h inet 10.231.8.1/30 scope global";
        assert_eq!(pick_subnet(7, used), Some(9));
    }

    #[test]
    fn the_drop_program_drops_the_share_asked_for() {
        assert_eq!(
            random_drop_bytecode(10),
            "4,32 0 0 4294963256,53 0 1 3865470566,6 0 0 2,6 0 0 4294967295"
        );
        // 0 %: no random number is at or above 2^32 - 1 but that one.
        assert!(random_drop_bytecode(0).contains(",53 0 1 4294967295,"));
        assert!(random_drop_bytecode(100).contains(",53 0 1 0,"));
    }

    #[test]
    fn clsact_counters_are_read_from_tc_output() {
        let out = "qdisc noqueue 0: root refcnt 2 \n Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\nqdisc clsact ffff: parent ffff:fff1 \n Sent 21808 bytes 504 pkt (dropped 37, overlimits 0 requeues 0) \n";
        assert_eq!(clsact_counts(out), Some((504, 37)));
        assert_eq!(
            clsact_counts("qdisc noqueue 0: root\n Sent 0 bytes 0 pkt (dropped 0, x)\n"),
            None
        );
    }
}
