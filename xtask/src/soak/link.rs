//! The servers' way to Redis in a drills run: a TCP relay on the host
//! side of the namespace's veth pair that holds every chunk it forwards
//! for a set delay, in both directions.
//!
//! Why it exists: the link drill wants the link between the servers and
//! Redis slow and lossy. Where the kernel has `sch_netem`, netem does both
//! and this relay's delay stays at zero. Where it has not (this VM's
//! kernel), loss is still real packet loss on the veth (a classic-BPF
//! filter, netns.rs), and the delay comes from here: each chunk read is
//! written on after `base ± jitter` ms, never before the chunk read ahead
//! of it (TCP keeps its order; so does this). The relay's own leg is on
//! loopback; its leg to Redis crosses the veth, so what it sends is
//! dropped and retransmitted as on a bad network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The delay every chunk gets now: a base and a spread, in ms.
#[derive(Default)]
struct Delay {
    base_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

impl Delay {
    /// `base ± jitter`, uniform, from `rng` (a xorshift state).
    fn sample(&self, rng: &mut u64) -> Duration {
        let base = self.base_ms.load(Ordering::Relaxed);
        let jitter = self.jitter_ms.load(Ordering::Relaxed);
        if base == 0 && jitter == 0 {
            return Duration::ZERO;
        }
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let spread = *rng % (2 * jitter * 1000 + 1);
        let us = (base * 1000 + spread).saturating_sub(jitter * 1000);
        Duration::from_micros(us)
    }
}

/// A relay from a loopback port to `upstream`, on a runtime of its own
/// (one thread), so the load's tasks cannot hold its timers up. Stopped
/// on drop: its connections close, as if the link went away.
pub(crate) struct DelayLink {
    pub addr: SocketAddr,
    delay: Arc<Delay>,
    rt: Option<tokio::runtime::Runtime>,
}

impl DelayLink {
    pub fn start(upstream: SocketAddr) -> anyhow::Result<DelayLink> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("soak-link")
            .enable_all()
            .build()?;
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .context("cannot bind the relay to Redis")?;
        let addr = listener.local_addr()?;
        let delay = Arc::new(Delay::default());
        let d = delay.clone();
        rt.spawn(async move {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            while let Ok((client, _)) = listener.accept().await {
                seed = seed.wrapping_add(0x6a09_e667_f3bc_c909);
                tokio::spawn(relay(client, upstream, d.clone(), seed));
            }
        });
        Ok(DelayLink {
            addr,
            delay,
            rt: Some(rt),
        })
    }

    /// Every chunk from now on waits `base_ms ± jitter_ms` (0, 0: none).
    pub fn set_delay(&self, base_ms: u64, jitter_ms: u64) {
        let jitter_ms = jitter_ms.min(base_ms);
        self.delay.base_ms.store(base_ms, Ordering::Relaxed);
        self.delay.jitter_ms.store(jitter_ms, Ordering::Relaxed);
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        // Not `drop(rt)`: that blocks, and panics when the fleet is dropped
        // inside the load's runtime (a run that ends with an error).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// One connection: a server's socket and its own socket to Redis, bytes
/// relayed both ways. A failed connect closes the server's socket, as a
/// refused connection would look to it.
async fn relay(client: TcpStream, upstream: SocketAddr, delay: Arc<Delay>, seed: u64) {
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pipe(cr, sw, delay.clone(), seed | 1),
        pipe(sr, cw, delay, seed.rotate_left(17) | 1),
    );
}

/// Reads `from` and writes each chunk to `to` when its time comes. Ends
/// when either side does; shuts `to`'s write side so the peer sees the end.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Arc<Delay>, seed: u64) {
    // Unbounded: a reader held back by the delay would stall TCP flow
    // control instead of delaying; what is in flight is one delay's worth.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut rng = seed;
        let mut last = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = (Instant::now() + delay.sample(&mut rng)).max(last);
            last = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_stays_within_its_spread() {
        let d = Delay::default();
        let mut rng = 7u64;
        assert_eq!(d.sample(&mut rng), Duration::ZERO);
        d.base_ms.store(40, Ordering::Relaxed);
        d.jitter_ms.store(20, Ordering::Relaxed);
        let samples: Vec<Duration> = (0..2000).map(|_| d.sample(&mut rng)).collect();
        let lo = samples.iter().min().copied().unwrap_or_default();
        let hi = samples.iter().max().copied().unwrap_or_default();
        assert!(
            lo >= Duration::from_millis(20) && lo < Duration::from_millis(25),
            "{lo:?}"
        );
        assert!(
            hi <= Duration::from_millis(60) && hi > Duration::from_millis(55),
            "{hi:?}"
        );
    }

    #[test]
    fn bytes_cross_the_relay_late_and_in_order() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let upstream = echo.local_addr().expect("addr");
            tokio::spawn(async move {
                let (mut s, _) = echo.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            let link = tokio::task::spawn_blocking(move || DelayLink::start(upstream))
                .await
                .expect("join")
                .expect("start");
            link.set_delay(30, 10);
            let mut c = TcpStream::connect(link.addr).await.expect("connect");
            let sent: Vec<u8> = (0..200u8).collect();
            let t = Instant::now();
            for chunk in sent.chunks(10) {
                c.write_all(chunk).await.expect("write");
            }
            let mut got = vec![0u8; sent.len()];
            c.read_exact(&mut got).await.expect("read");
            // Two legs, each at least base - jitter.
            assert!(
                t.elapsed() >= Duration::from_millis(40),
                "{:?}",
                t.elapsed()
            );
            assert_eq!(got, sent);
            tokio::task::spawn_blocking(move || drop(link))
                .await
                .expect("join");
        });
    }
}
