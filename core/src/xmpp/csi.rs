//! XEP-0352 client state indication: tells the server whether anyone looks at the app, so
//! that it may hold what is not urgent (presence updates) while nobody does and the phone's
//! radio can stay asleep.
//!
//! tokio-xmpp's stream sends stanzas only, so the `<active/>`/`<inactive/>` nonzas are
//! written by the transport under it ([`CsiStream`]) at the one moment when its byte stream
//! is between two top-level elements: when the XML stream flushes. (tokio-xmpp encodes each
//! element whole into its buffer and flushes the transport only once that buffer is empty.)
//!
//! Each connection decides for itself, so no other task can arm the wrong one: it speaks
//! only if its server offered CSI after authentication ([`CsiStream::set_offered`], from the
//! stream features the login reads) and once it has written a resource binding or a stream
//! resumption request (the server handles a nonza written after those after them: in order);
//! never after the stream's footer. A new connection tells the wanted state whatever it is —
//! the server's view after a resumption is not known — and after that only changes. A change
//! goes out with the next flush; the session makes one by pinging the server.
//!
//! Servers hold presence while a client is inactive, but pass IQs at once (and with them
//! what they held from the same sender): link signals are IQs for that reason.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

/// The stream feature a server advertises when it understands the nonzas.
pub const NS_CSI: &str = "urn:xmpp:csi:0";
const ACTIVE: &[u8] = b"<active xmlns='urn:xmpp:csi:0'/>";
const INACTIVE: &[u8] = b"<inactive xmlns='urn:xmpp:csi:0'/>";
const FOOTER: &[u8] = b"</stream:stream>";
/// What a client writes once authenticated, to bind a resource, resume a session or enable
/// stream management: from then on the stream belongs to a session.
const SESSION_MARKERS: [&[u8]; 2] = [b"urn:ietf:params:xml:ns:xmpp-bind", b"urn:xmpp:sm:3"];
const MARKER_MAX: usize = 32;

/// What the app wants the server to know, shared by the session and its connections. The
/// default handle indicates nothing (tools that log in without a session).
#[derive(Clone, Debug, Default)]
pub struct ClientIndicator(Option<Arc<AtomicBool>>);

impl ClientIndicator {
    /// A handle whose connections indicate the state set with [`Self::set_active`] (active
    /// to begin with).
    pub fn new() -> ClientIndicator {
        ClientIndicator(Some(Arc::new(AtomicBool::new(true))))
    }

    /// Records what the app wants; true if that changed.
    pub fn set_active(&self, active: bool) -> bool {
        self.0
            .as_ref()
            .is_some_and(|a| a.swap(active, Ordering::Relaxed) != active)
    }

    /// The state to indicate (none: this handle indicates nothing).
    fn wanted(&self) -> Option<bool> {
        self.0.as_ref().map(|a| a.load(Ordering::Relaxed))
    }
}

/// A transport that writes the client's state between elements (see the module docs).
pub struct CsiStream<T> {
    inner: T,
    indicator: ClientIndicator,
    /// The server offered CSI after authentication.
    offered: AtomicBool,
    /// A binding or resumption request went out: the stream belongs to a session.
    in_session: bool,
    /// The last bytes written before that, to find a marker split across writes.
    seen: Vec<u8>,
    /// The state this connection told its server (none yet).
    sent: Option<bool>,
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
            indicator: indicator.clone(),
            offered: AtomicBool::new(false),
            in_session: false,
            seen: Vec::new(),
            sent: None,
            pending: &[],
            tail: [0; FOOTER.len()],
            closed: false,
        }
    }

    /// Whether the server offered CSI in the stream features after authentication.
    pub fn set_offered(&self, offered: bool) {
        self.offered.store(offered, Ordering::Relaxed);
    }

    fn note_written(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.tail.len());
        self.tail.rotate_left(n);
        let keep = self.tail.len() - n;
        self.tail[keep..].copy_from_slice(&bytes[bytes.len() - n..]);
        if self.tail == *FOOTER {
            self.closed = true;
        }
        if !self.in_session {
            // Only a few elements are written before this (header, STARTTLS, SASL).
            self.seen.extend_from_slice(bytes);
            self.in_session = SESSION_MARKERS
                .iter()
                .any(|m| self.seen.windows(m.len()).any(|w| w == *m));
            let drop = self.seen.len().saturating_sub(MARKER_MAX);
            self.seen.drain(..drop);
            if self.in_session {
                self.seen = Vec::new();
            }
        }
    }

    /// The state to tell the server now, if any.
    fn due(&self) -> Option<bool> {
        if self.closed || !self.in_session || !self.offered.load(Ordering::Relaxed) {
            return None;
        }
        self.indicator.wanted().filter(|w| self.sent != Some(*w))
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
        if let Some(active) = this.due() {
            this.sent = Some(active);
            this.pending = if active { ACTIVE } else { INACTIVE };
            tracing::debug!(active, "XMPP client state indicated");
            ready!(this.poll_pending(cx))?;
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

    const AUTH: &[u8] = b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X'/>";
    const BIND: &[u8] =
        b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>";

    async fn write_flushed(stream: &mut CsiStream<Vec<u8>>, bytes: &[u8]) {
        stream.write_all(bytes).await.unwrap();
        stream.flush().await.unwrap();
    }

    fn text(stream: &CsiStream<Vec<u8>>) -> String {
        String::from_utf8(stream.inner.clone()).unwrap()
    }

    #[tokio::test]
    async fn the_state_goes_out_once_bound_then_only_its_changes() {
        let indicator = ClientIndicator::new();
        assert!(indicator.set_active(false));
        assert!(!indicator.set_active(false), "no change");
        let mut stream = CsiStream::new(Vec::new(), &indicator);
        stream.set_offered(true);
        // Authentication: nothing of ours.
        write_flushed(&mut stream, AUTH).await;
        assert_eq!(text(&stream), String::from_utf8_lossy(AUTH));
        // The binding request, split over two writes: the state follows it.
        stream.write_all(&BIND[..40]).await.unwrap();
        stream.write_all(&BIND[40..]).await.unwrap();
        stream.flush().await.unwrap();
        write_flushed(&mut stream, b"<r/>").await;
        indicator.set_active(true);
        write_flushed(&mut stream, b"<a/>").await;
        write_flushed(&mut stream, b"<iq/>").await;
        let expected = format!(
            "{}{}<inactive xmlns='urn:xmpp:csi:0'/><r/><a/><active xmlns='urn:xmpp:csi:0'/><iq/>",
            String::from_utf8_lossy(AUTH),
            String::from_utf8_lossy(BIND)
        );
        assert_eq!(text(&stream), expected);
    }

    #[tokio::test]
    async fn a_resumed_stream_says_the_state_even_when_active() {
        // The server may still think the client inactive from before the cut.
        let indicator = ClientIndicator::new();
        let mut stream = CsiStream::new(Vec::new(), &indicator);
        stream.set_offered(true);
        write_flushed(
            &mut stream,
            b"<resume xmlns='urn:xmpp:sm:3' h='3' previd='x'/>",
        )
        .await;
        assert!(text(&stream).ends_with("<active xmlns='urn:xmpp:csi:0'/>"));
    }

    #[tokio::test]
    async fn a_server_that_did_not_offer_csi_and_a_closed_stream_hear_nothing() {
        let indicator = ClientIndicator::new();
        indicator.set_active(false);
        let mut plain = CsiStream::new(Vec::new(), &indicator);
        write_flushed(&mut plain, BIND).await;
        assert_eq!(plain.inner, BIND);
        // The footer split over two writes, as a partial write would leave it.
        let mut closing = CsiStream::new(Vec::new(), &indicator);
        closing.set_offered(true);
        closing
            .write_all(b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:")
            .await
            .unwrap();
        closing.write_all(b"stream>").await.unwrap();
        closing.flush().await.unwrap();
        assert!(
            text(&closing).ends_with("</stream:stream>"),
            "{}",
            text(&closing)
        );
        // The default handle indicates nothing.
        let none = ClientIndicator::default();
        assert!(!none.set_active(false));
        let mut silent = CsiStream::new(Vec::new(), &none);
        silent.set_offered(true);
        write_flushed(&mut silent, BIND).await;
        assert_eq!(silent.inner, BIND);
    }

    /// Accepts at most 5 bytes per write, and every other call is not ready.
    struct Trickle {
        written: Vec<u8>,
        stall: bool,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.stall = !self.stall;
            if self.stall {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(5);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_nonza_held_up_by_the_socket_is_finished_before_anything_else() {
        let indicator = ClientIndicator::new();
        indicator.set_active(false);
        let trickle = Trickle {
            written: Vec::new(),
            stall: false,
        };
        let mut stream = CsiStream::new(trickle, &indicator);
        stream.set_offered(true);
        stream.write_all(BIND).await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(b"<iq/>").await.unwrap();
        assert_eq!(
            String::from_utf8(stream.inner.written).unwrap(),
            format!(
                "{}<inactive xmlns='urn:xmpp:csi:0'/><iq/>",
                String::from_utf8_lossy(BIND)
            )
        );
    }
}
