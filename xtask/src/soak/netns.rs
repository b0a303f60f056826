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

/// The delay and loss of the netem drill: `netem delay 40ms 20ms loss 3%`.
pub(crate) const NETEM: &[&str] = &["netem", "delay", "40ms", "20ms", "loss", "3%"];
/// Used when the kernel has no `sch_netem` (some VM kernels): a token
/// bucket at about what the servers exchange with Redis under the soak's
/// load, so that packets queue (delay up to `latency`) and the excess is
/// dropped (loss). Not the same shape as netem: delay grows with the
/// traffic and loss comes in bursts.
pub(crate) const TBF: &[&str] = &["tbf", "rate", "1mbit", "burst", "8kb", "latency", "60ms"];

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

    /// Delays and drops on both ends of the pair: `netem` when the kernel
    /// has it, else a token bucket ([`TBF`]). Returns the qdisc used.
    pub fn shape(&self) -> anyhow::Result<String> {
        let host = ["qdisc", "add", "dev", &self.host_if, "root"];
        let inside = ["-n", &self.name, "qdisc", "add", "dev", &self.ns_if, "root"];
        let with = |q: &[&str]| -> anyhow::Result<()> {
            tc(&[&host[..], q].concat())?;
            tc(&[&inside[..], q].concat())
        };
        match with(NETEM) {
            Ok(()) => Ok(NETEM.join(" ")),
            Err(e) if format!("{e:#}").contains("unknown") => {
                self.unshape();
                with(TBF)?;
                Ok(TBF.join(" "))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the qdiscs [`shape`](Self::shape) added (none: no error).
    pub fn unshape(&self) {
        let _ = tc(&["qdisc", "del", "dev", &self.host_if, "root"]);
        let _ = tc(&["-n", &self.name, "qdisc", "del", "dev", &self.ns_if, "root"]);
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
}
