//! Test traffic between namespaces: bounded in size and time.

use crate::netns::Namespace;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Deterministic pseudo-random bytes (xorshift), so both ends can be checked by hash.
fn fill(seed: &mut u64, buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let bytes = seed.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// What a TCP transfer delivered.
#[derive(Debug)]
pub struct Transfer {
    pub sent_sha256: String,
    pub received_sha256: String,
    pub received: usize,
    /// The sender's address as the receiver's socket saw it.
    pub seen_from: SocketAddr,
}

/// Sends `total` bytes over TCP from `from` to `to`, where the receiver listens on
/// `listen_ip:port` and the sender connects to `target_ip:port` (the receiver as the sender
/// sees it). Every read and write has a 30 s timeout.
pub fn tcp_transfer(
    from: &Namespace,
    to: &Namespace,
    listen_ip: IpAddr,
    target_ip: IpAddr,
    port: u16,
    total: usize,
) -> Transfer {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = to.run(move || {
        let listener = TcpListener::bind((listen_ip, port)).expect("listen");
        ready_tx.send(()).expect("ready");
        let (mut stream, peer) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0usize;
        loop {
            let n = stream.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            received += n;
        }
        (received, hex::encode(hasher.finalize()), peer)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("receiver did not start");
    let target = SocketAddr::from((target_ip, port));
    let sent_sha256 = from
        .run(move || {
            let mut stream =
                TcpStream::connect_timeout(&target, Duration::from_secs(10)).expect("connect");
            stream
                .set_write_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut hasher = Sha256::new();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0usize;
            while sent < total {
                let n = buf.len().min(total - sent);
                fill(&mut seed, &mut buf[..n]);
                stream.write_all(&buf[..n]).expect("write");
                hasher.update(&buf[..n]);
                sent += n;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            hex::encode(hasher.finalize())
        })
        .join()
        .expect("sender");
    let (received, received_sha256, seen_from) = server.join().expect("receiver");
    Transfer {
        sent_sha256,
        received_sha256,
        received,
        seen_from,
    }
}
