//! A TCP fault proxy the harness puts between a node and MongoDB, so the
//! nemesis can degrade one node's link: added latency with jitter, a
//! bandwidth cap, a blackhole (bytes are held, connections stay open) and
//! connection resets (RST). Hand-written (about 150 lines of tokio) because
//! the established tools for this (toxiproxy, and Rust ports of it) run as
//! separate servers driven over HTTP; this one lives inside the harness and
//! dies with it.

use rand::Rng;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The link's condition; the default is a healthy link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkFault {
    pub latency: Duration,
    pub jitter: Duration,
    pub bandwidth_bytes_per_s: Option<u64>,
    pub blackhole: bool,
}

/// Both sockets of every open connection.
type Registry = Arc<Mutex<Vec<(Arc<TcpStream>, Arc<TcpStream>)>>>;

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: watch::Sender<LinkFault>,
    /// Both sockets of every open connection, to reset them on demand.
    conns: Registry,
    /// Bytes read from either side, and connections accepted: whether the
    /// node really goes through this proxy.
    traffic: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_connections();
    }
}

impl FaultProxy {
    /// Listen on 127.0.0.1:0 and forward every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(LinkFault::default());
        let conns: Registry = Arc::default();
        let traffic = Arc::new(AtomicU64::new(0));
        let (rx_state, registry, counter) = (state.clone(), conns.clone(), traffic.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (client, server) = (Arc::new(client), Arc::new(server));
                registry.lock().expect("proxy registry lock").push((client.clone(), server.clone()));
                tokio::spawn(pump(client.clone(), server.clone(), rx_state.subscribe(), counter.clone()));
                tokio::spawn(pump(server, client, rx_state.subscribe(), counter.clone()));
            }
        });
        Ok(Self { addr, state, conns, traffic, accept })
    }

    /// Bytes read from either side plus connections accepted so far. A
    /// network fault on a link whose traffic does not move acted on nothing.
    pub fn traffic(&self) -> u64 {
        self.traffic.load(Ordering::Relaxed)
    }

    pub fn set(&self, fault: LinkFault) {
        self.state.send_replace(fault);
    }

    /// Reset every open connection (RST to both ends); new ones are accepted.
    /// Returns how many connections were reset.
    pub fn reset_connections(&self) -> usize {
        let conns = std::mem::take(&mut *self.conns.lock().expect("proxy registry lock"));
        let n = conns.len();
        for (a, b) in conns {
            for s in [a, b] {
                // SO_LINGER 0 makes the close an RST; shutdown wakes the pumps.
                let sock = socket2::SockRef::from(&*s);
                let _ = sock.set_linger(Some(Duration::ZERO));
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
        }
        n
    }
}

/// Copy one direction, delaying each chunk by the current latency (+ jitter),
/// holding it while blackholed, and pacing to the bandwidth cap.
async fn pump(from: Arc<TcpStream>, to: Arc<TcpStream>, state: watch::Receiver<LinkFault>, traffic: Arc<AtomicU64>) {
    let (tx, mut rx) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let mut writer_state = state.clone();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            loop {
                let blackhole = writer_state.borrow_and_update().blackhole;
                if !blackhole {
                    break;
                }
                if writer_state.changed().await.is_err() {
                    return;
                }
            }
            if write_all(&to, &chunk).await.is_err() {
                return;
            }
            let cap = writer_state.borrow().bandwidth_bytes_per_s;
            if let Some(bw) = cap.filter(|b| *b > 0) {
                tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / bw as f64)).await;
            }
        }
        let _ = socket2::SockRef::from(&*to).shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read(&from, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        traffic.fetch_add(n as u64, Ordering::Relaxed);
        let fault = state.borrow().clone();
        let jitter = if fault.jitter.is_zero() { Duration::ZERO } else { rand::rng().random_range(Duration::ZERO..fault.jitter) };
        let due = tokio::time::Instant::now() + fault.latency + jitter;
        if tx.send((due, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn read(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server: what the proxy forwards to.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(c: &mut TcpStream) -> io::Result<()> {
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn forwards_delays_blackholes_and_resets() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        assert_eq!(proxy.traffic(), 0);
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        round_trip(&mut c).await.unwrap();
        assert!(proxy.traffic() >= 9, "one connection and 4 bytes each way: {}", proxy.traffic());
        // 100 ms each way: a round trip takes at least 200 ms.
        proxy.set(LinkFault { latency: Duration::from_millis(100), ..Default::default() });
        let t = Instant::now();
        round_trip(&mut c).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
        // Blackhole: nothing comes back until it is lifted.
        proxy.set(LinkFault { blackhole: true, ..Default::default() });
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        assert!(tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut buf)).await.is_err(), "blackholed");
        proxy.set(LinkFault::default());
        tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut buf)).await.expect("held bytes arrive after the blackhole").unwrap();
        // Reset: the client's connection dies; a new one works.
        proxy.reset_connections();
        let dead = tokio::time::timeout(Duration::from_secs(2), round_trip(&mut c)).await.expect("no hang");
        assert!(dead.is_err(), "the reset connection is unusable");
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        round_trip(&mut fresh).await.unwrap();
    }
}
