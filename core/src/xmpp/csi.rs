//! XEP-0352 client state indication: tells the server whether anyone looks at the app, so
//! that it may hold what is not urgent (presence updates) while nobody does and the phone's
//! radio can stay asleep.
//!
//! tokio-xmpp's stream sends stanzas only, so the `<active/>`/`<inactive/>` nonzas are
//! written by the transport under it ([`CsiStream`]) at the one moment when its byte stream
//! is between two top-level elements: when the XML stream flushes. (tokio-xmpp encodes each
//! element whole into its buffer and flushes the transport only once that buffer is empty.)
//! A change therefore goes out with the next flush; the session makes one by pinging the
//! server. Nothing is written after the stream's footer.
//!
//! Servers hold presence while a client is inactive, but pass IQs at once (and with them
//! what they held from the same sender): link signals are IQs for that reason.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// The stream feature a server advertises when it understands the nonzas.
pub const NS_CSI: &str = "urn:xmpp:csi:0";
const ACTIVE: &[u8] = b"<active xmlns='urn:xmpp:csi:0'/>";
const INACTIVE: &[u8] = b"<inactive xmlns='urn:xmpp:csi:0'/>";
const FOOTER: &[u8] = b"</stream:stream>";

/// What the app wants the server to know, shared by the session and its connections. The
/// default handle indicates nothing (tools that log in without a session).
#[derive(Clone, Debug, Default)]
pub struct ClientIndicator(Option<Arc<Mutex<Shared>>>);

#[derive(Debug)]
struct Shared {
    /// Someone looks at the app (the state of every fresh stream, XEP-0352).
    active: bool,
    /// The connection (by number) that may carry nonzas: bound, and the server offered CSI.
    armed: Option<u64>,
    /// Connections made so far (the last one is the one the session binds).
    made: u64,
}

impl ClientIndicator {
    /// A handle whose connections indicate the state set with [`Self::set_active`].
    pub fn new() -> ClientIndicator {
        ClientIndicator(Some(Arc::new(Mutex::new(Shared {
            active: true,
            armed: None,
            made: 0,
        }))))
    }

    fn lock(&self) -> Option<MutexGuard<'_, Shared>> {
        // Plain data: a panic elsewhere cannot leave it inconsistent.
        self.0
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records what the app wants; true if that changed.
    pub fn set_active(&self, active: bool) -> bool {
        self.lock()
            .is_some_and(|mut s| std::mem::replace(&mut s.active, active) != active)
    }

    /// Whether the app wants the server to treat it as active.
    pub fn active(&self) -> bool {
        self.lock().is_none_or(|s| s.active)
    }

    /// The connection made last is bound and its server understands CSI: it may carry
    /// nonzas from its next flush on.
    pub fn arm_latest(&self) {
        if let Some(mut s) = self.lock() {
            s.armed = Some(s.made);
        }
    }

    /// No connection may carry nonzas (the session is offline or closing).
    pub fn disarm(&self) {
        if let Some(mut s) = self.lock() {
            s.armed = None;
        }
    }

    /// Whether a connection carries nonzas now.
    pub fn armed(&self) -> bool {
        self.lock().is_some_and(|s| s.armed.is_some())
    }

    fn next_connection(&self) -> u64 {
        self.lock().map_or(0, |mut s| {
            s.made += 1;
            s.made
        })
    }

    /// The state connection `id` should indicate now, if it differs from `sent`.
    fn due(&self, id: u64, sent_active: bool) -> Option<bool> {
        let s = self.lock()?;
        (s.armed == Some(id) && s.active != sent_active).then_some(s.active)
    }
}

/// A transport that writes the client's state between elements (see the module docs).
pub struct CsiStream<T> {
    inner: T,
    indicator: ClientIndicator,
    id: u64,
    /// The state the server was told on this connection (active until told otherwise).
    sent_active: bool,
    /// The rest of a nonza being written.
    pending: &'static [u8],
    /// The last bytes written, to see the stream's footer go by.
    tail: [u8; FOOTER.len()],
    closed: bool,
}

impl<T> CsiStream<T> {
    pub fn new(inner: T, indicator: &ClientIndicator) -> CsiStream<T> {
        CsiStream {
            inner,
            id: indicator.next_connection(),
            indicator: indicator.clone(),
            sent_active: true,
            pending: &[],
            tail: [0; FOOTER.len()],
            closed: false,
        }
    }

    fn note_written(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.tail.len());
        self.tail.rotate_left(n);
        let keep = self.tail.len() - n;
        self.tail[keep..].copy_from_slice(&bytes[bytes.len() - n..]);
        if self.tail == *FOOTER {
            self.closed = true;
        }
    }
}

impl<T: AsyncWrite + Unpin> CsiStream<T> {
    /// Writes the rest of a nonza, before anything else may be written.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending = &self.pending[n..];
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CsiStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncBufRead + Unpin> AsyncBufRead for CsiStream<T> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amt);
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CsiStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.note_written(&buf[..n.min(buf.len())]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if !this.closed {
            if let Some(active) = this.indicator.due(this.id, this.sent_active) {
                this.sent_active = active;
                this.pending = if active { ACTIVE } else { INACTIVE };
                tracing::debug!(active, "XMPP client state indicated");
                ready!(this.poll_pending(cx))?;
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        this.closed = true;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Everything written through a stream for connection `made`-th of `indicator`.
    async fn written(indicator: &ClientIndicator, script: &[(&[u8], bool)]) -> Vec<u8> {
        let mut stream = CsiStream::new(Vec::new(), indicator);
        for (bytes, flush) in script {
            stream.write_all(bytes).await.unwrap();
            if *flush {
                stream.flush().await.unwrap();
            }
        }
        stream.inner
    }

    #[tokio::test]
    async fn a_change_goes_out_at_the_next_flush_of_the_armed_connection_only() {
        let indicator = ClientIndicator::new();
        assert!(indicator.set_active(false));
        assert!(!indicator.set_active(false), "no change");
        // Not armed (not bound yet): nothing but what the stream writes.
        let out = written(&indicator, &[(b"<iq/>", true)]).await;
        assert_eq!(out, b"<iq/>");
        // Armed: after the flushed element, once.
        let mut stream = CsiStream::new(Vec::new(), &indicator);
        indicator.arm_latest();
        stream.write_all(b"<iq>").await.unwrap();
        stream.write_all(b"</iq>").await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(b"<r/>").await.unwrap();
        stream.flush().await.unwrap();
        indicator.set_active(true);
        stream.write_all(b"<a/>").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(
            String::from_utf8(stream.inner).unwrap(),
            "<iq></iq><inactive xmlns='urn:xmpp:csi:0'/><r/><a/><active xmlns='urn:xmpp:csi:0'/>"
        );
    }

    #[tokio::test]
    async fn an_older_connection_and_a_disarmed_one_say_nothing() {
        let indicator = ClientIndicator::new();
        let mut old = CsiStream::new(Vec::new(), &indicator);
        let _new = CsiStream::new(Vec::<u8>::new(), &indicator);
        indicator.arm_latest();
        indicator.set_active(false);
        old.write_all(b"<iq/>").await.unwrap();
        old.flush().await.unwrap();
        assert_eq!(old.inner, b"<iq/>");
        indicator.disarm();
        assert!(!indicator.armed());
    }

    #[tokio::test]
    async fn nothing_follows_the_stream_footer() {
        let indicator = ClientIndicator::new();
        let mut stream = CsiStream::new(Vec::new(), &indicator);
        indicator.arm_latest();
        indicator.set_active(false);
        // The footer split over two writes, as a partial write would leave it.
        stream
            .write_all(b"<presence type='unavailable'/></stream:")
            .await
            .unwrap();
        stream.write_all(b"stream>").await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(
            stream.inner,
            b"<presence type='unavailable'/></stream:stream>".to_vec()
        );
    }

    #[test]
    fn the_default_handle_indicates_nothing() {
        let none = ClientIndicator::default();
        assert!(!none.set_active(false));
        assert!(none.active());
        none.arm_latest();
        assert!(!none.armed());
    }

    #[tokio::test]
    async fn a_partial_write_finishes_the_nonza_before_anything_else() {
        /// Accepts at most 5 bytes per write.
        struct Trickle(Vec<u8>);
        impl AsyncWrite for Trickle {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let n = buf.len().min(5);
                self.0.extend_from_slice(&buf[..n]);
                Poll::Ready(Ok(n))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let indicator = ClientIndicator::new();
        let mut stream = CsiStream::new(Trickle(Vec::new()), &indicator);
        indicator.arm_latest();
        indicator.set_active(false);
        stream.write_all(b"<message/>").await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(b"<iq/>").await.unwrap();
        assert_eq!(
            String::from_utf8(stream.inner.0).unwrap(),
            "<message/><inactive xmlns='urn:xmpp:csi:0'/><iq/>"
        );
    }
}
