//! The engine object the apps hold: one per signed-in account.

use crate::config::VpnConfig;
use crate::control::parse_address;
use crate::error::{CallbackError, VpnError};
use crate::events::{spawn_byte_dispatcher, spawn_dispatcher, EventSink, VpnEventListener};
use crate::logging;
use crate::views::{Friend, LinkInfo, Status, TunnelSettings};
use socialvpn_core::api::{ApiError, ErrorKind, FriendAction, Request, Response};
use socialvpn_core::identity::DeviceIdentity;
use socialvpn_core::tun::{TunDevice, DEFAULT_MTU};
use socialvpn_core::{Engine, EngineError, Framing, PreparedEngine};
use std::future::Future;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

/// Implemented by the app: keeps a socket of the engine's out of the VPN before it is used
/// (Android: `VpnService.protect(fd)`; Apple platforms need nothing and pass no protector).
/// Called from inside the engine: it must not call the engine.
#[uniffi::export(with_foreign)]
pub trait SocketProtector: Send + Sync {
    /// False (or an exception) refuses: the engine then reports `ProtectRefused`.
    fn protect(&self, fd: i32) -> Result<bool, CallbackError>;
}

/// How packets are framed on the tunnel fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum TunFraming {
    /// Bare IP packets: Android `VpnService`, Linux tun with IFF_NO_PI.
    RawIp,
    /// A 4-byte address family before each packet: Apple utun.
    AfHeader,
}

type EngineCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// A SocialVPN engine: signed in from creation, linked with the enabled friends, carrying
/// their traffic once `start_tunnel` gives it the platform's tunnel fd. Methods may be
/// called from any thread except from inside the socket protector; they block briefly
/// while the engine answers (call them off the UI thread).
#[derive(uniffi::Object)]
pub struct SocialVpn {
    /// Taken only by `drop`, to shut it down without blocking.
    runtime: Option<Runtime>,
    handle: Handle,
    engine: Mutex<Option<Engine>>,
    device_id: String,
    tunnel: TunnelSettings,
}

#[uniffi::export]
impl SocialVpn {
    /// Loads (or creates) the device identity in `config.state_dir`, starts the engine and
    /// signs in; `listener` hears about the login, the roster and the links from then on.
    /// Resolves the STUN/TURN names, which may block on DNS.
    #[uniffi::constructor]
    pub fn new(
        config: VpnConfig,
        listener: Arc<dyn VpnEventListener>,
        protector: Option<Arc<dyn SocketProtector>>,
    ) -> Result<Arc<SocialVpn>, VpnError> {
        logging::init();
        not_inside_engine()?;
        let state_dir = Path::new(&config.state_dir);
        let identity =
            DeviceIdentity::load_or_create(state_dir).map_err(|e| VpnError::StateDirectory {
                reason: e.to_string(),
            })?;
        let device_id = identity.uid().to_string();
        let protect = protector.map(|p| {
            socialvpn_core::protect::SocketProtector::new(move |fd| match p.protect(fd) {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::info!(error = %e, "the socket protector failed");
                    false
                }
            })
        });
        let engine_config = config.engine_config(&device_id, protect)?;
        let prepared = PreparedEngine::load(engine_config)?;
        let subnet = prepared.subnet();
        let tunnel = TunnelSettings {
            ipv4: prepared.ipv4().to_string(),
            ipv4_prefix: subnet.prefix(),
            ipv4_route: subnet.to_string(),
            ipv6: prepared.ipv6().to_string(),
            ipv6_prefix: 64,
            mtu: DEFAULT_MTU,
        };
        // One worker: the engine is one task, and a phone has cores to spare for the app.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("socialvpn-engine")
            .enable_all()
            .build()
            .map_err(|e| VpnError::Socket {
                reason: format!("cannot start the engine's runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let engine = {
            let _inside = runtime.enter();
            prepared.start(None)?
        };
        let events = engine.subscribe();
        if let Err(e) = spawn_dispatcher(handle.clone(), events, listener) {
            handle.block_on(engine.shutdown()).ok();
            return Err(VpnError::Socket {
                reason: format!("cannot start the event thread: {e}"),
            });
        }
        Ok(Arc::new(SocialVpn {
            runtime: Some(runtime),
            handle,
            engine: Mutex::new(Some(engine)),
            device_id,
            tunnel,
        }))
    }

    /// This device's id (hex), as friends see it.
    pub fn device_id(&self) -> String {
        self.device_id.clone()
    }

    /// Addresses, route and MTU for the platform's VPN builder.
    pub fn tunnel_settings(&self) -> TunnelSettings {
        self.tunnel.clone()
    }

    /// Hands over the platform's tunnel fd (Android: `ParcelFileDescriptor.detachFd()`).
    /// Replaces a previous tunnel.
    ///
    /// Ownership is exact: on success the engine owns the tunnel and `fd` is closed (the
    /// engine works on its own duplicate, closed when the tunnel is stopped, replaced or
    /// lost). On any error `fd` is left open, with the flags it had, and stays the
    /// caller's to use or close.
    pub fn start_tunnel(&self, fd: i32, framing: TunFraming) -> Result<(), VpnError> {
        not_inside_engine()?;
        check_tunnel_fd(fd)?;
        let framing = match framing {
            TunFraming::RawIp => Framing::RawIp,
            TunFraming::AfHeader => Framing::AfHeader,
        };
        let invalid = |reason: String| VpnError::InvalidFd { fd, reason };
        // SAFETY: `fd` is open (checked above); borrowed only for this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        // The engine gets a duplicate, so nothing it does on a failure path (dropping the
        // device, a stopped engine dropping its command) can close the caller's fd.
        let copy = borrowed
            .try_clone_to_owned()
            .map_err(|e| invalid(format!("cannot duplicate it: {e}")))?;
        let flags = fd_flags(fd);
        let result = TunDevice::from_owned(copy, framing)
            .map_err(|e| invalid(e.to_string()))
            .and_then(|tun| self.call(move |e| Box::pin(e.attach_tunnel(tun))));
        match result {
            Ok(()) => {
                // SAFETY: the caller handed `fd` over; the engine holds its duplicate.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Ok(())
            }
            Err(e) => {
                // O_NONBLOCK is shared with the duplicate: give the fd back as it came.
                if let Some(flags) = flags {
                    // SAFETY: fcntl on an open descriptor.
                    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
                }
                Err(e)
            }
        }
    }

    /// Closes the tunnel fd; the engine stays signed in and linked.
    pub fn stop_tunnel(&self) -> Result<(), VpnError> {
        self.call(|e| Box::pin(e.detach_tunnel()))
    }

    /// Tells friends the links are closing, signs off and ends the engine (the listener's
    /// last event is `Stopped`). Calling it again does nothing.
    pub fn stop(&self) -> Result<(), VpnError> {
        not_inside_engine()?;
        let engine = self
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match engine {
            Some(engine) => Ok(self.handle.block_on(engine.shutdown())?),
            None => Ok(()),
        }
    }

    /// The platform's network changed (Wi-Fi ↔ cellular, new address): the engine finds
    /// new paths for its links and keeps their sessions.
    pub fn network_changed(&self) -> Result<(), VpnError> {
        self.done(Request::NetworkChanged)
    }

    /// The app's screens are shown (`true`) or hidden: while hidden, events only a screen
    /// needs are held and summed up when it is shown again (friend requests still come), and
    /// the XMPP server is told (XEP-0352), so it may hold friends' presence updates while
    /// nobody looks; links still come up (their signals are delivered at once).
    pub fn set_foreground(&self, foreground: bool) -> Result<(), VpnError> {
        self.done(if foreground {
            Request::Foreground
        } else {
            Request::Background
        })
    }

    pub fn status(&self) -> Result<Status, VpnError> {
        let Response::Status { status } = self.request(Request::Status)? else {
            return Err(unexpected());
        };
        Ok(Status::from(*status))
    }

    /// Friends, requests and the user's own devices, with toggles, addresses and links.
    pub fn roster(&self) -> Result<Vec<Friend>, VpnError> {
        let Response::Roster { friends } = self.request(Request::Roster)? else {
            return Err(unexpected());
        };
        Ok(friends.into_iter().map(Friend::from).collect())
    }

    /// The data plane's links.
    pub fn links(&self) -> Result<Vec<LinkInfo>, VpnError> {
        let Response::Links { links } = self.request(Request::Links)? else {
            return Err(unexpected());
        };
        Ok(links.into_iter().map(LinkInfo::from).collect())
    }

    /// Asks `jid` to be a friend (both see each other's devices once they accept).
    pub fn add_friend(&self, jid: String) -> Result<(), VpnError> {
        self.friend(FriendAction::Add, jid)
    }

    pub fn accept_friend(&self, jid: String) -> Result<(), VpnError> {
        self.friend(FriendAction::Accept, jid)
    }

    pub fn decline_friend(&self, jid: String) -> Result<(), VpnError> {
        self.friend(FriendAction::Decline, jid)
    }

    /// Ends the friendship both ways and closes the links.
    pub fn remove_friend(&self, jid: String) -> Result<(), VpnError> {
        self.friend(FriendAction::Remove, jid)
    }

    /// The user's switch for a friend: off closes the links and keeps them closed, across
    /// restarts.
    pub fn set_friend_enabled(&self, jid: String, enabled: bool) -> Result<(), VpnError> {
        let action = if enabled {
            FriendAction::Enable
        } else {
            FriendAction::Disable
        };
        self.friend(action, jid)
    }

    /// Gives a device (`Device.uid`) a fixed address in the user's subnet, kept across
    /// restarts; a device holding that address unpinned moves elsewhere.
    pub fn pin_address(&self, device: String, address: String) -> Result<(), VpnError> {
        let address = parse_address(&address)?;
        self.done(Request::PinAddress { device, address })
    }

    /// Lets a pinned device's address be moved again (it keeps it for now).
    pub fn unpin_address(&self, device: String) -> Result<(), VpnError> {
        self.done(Request::UnpinAddress { device })
    }

    /// The control protocol as bytes (`socialvpn_core::api`): one JSON request in, one JSON
    /// reply out — the iOS app's messages to its tunnel extension go straight here (the app
    /// builds and reads them with `encode_control_request` and `decode_control_reply`).
    /// Never throws: every failure (bytes that are no request, a stopped engine) is a reply.
    /// An `events` request may wait up to 30 s for an event: call it on a thread that may
    /// block; other calls go on meanwhile.
    pub fn handle_control(&self, request: Vec<u8>) -> Vec<u8> {
        if let Err(e) = not_inside_engine() {
            return Response::error(ErrorKind::Unsupported, e.to_string()).encode();
        }
        let request = match Request::decode(&request) {
            Ok(request) => request,
            Err(error) => return Response::Error { error }.encode(),
        };
        let guard = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(engine) = guard.as_ref() else {
            return Response::error(ErrorKind::Stopped, VpnError::Stopped.to_string()).encode();
        };
        match request {
            // The wait happens without the lock, which `stop` and every other call need.
            Request::Events { after, wait_ms } => {
                let log = engine.event_log();
                drop(guard);
                let wait = Duration::from_millis(u64::from(wait_ms));
                self.handle.block_on(log.answer(after, wait)).encode()
            }
            request => self.handle.block_on(engine.handle(request)).encode(),
        }
    }

    /// Delivers every event from now on to `sink` as the control protocol's bytes (for the
    /// iOS extension to relay to the app), on a thread of its own, in order.
    pub fn subscribe_events(&self, sink: Arc<dyn EventSink>) -> Result<(), VpnError> {
        not_inside_engine()?;
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        let engine = engine.as_ref().ok_or(VpnError::Stopped)?;
        spawn_byte_dispatcher(self.handle.clone(), engine.subscribe(), sink).map_err(|e| {
            VpnError::Socket {
                reason: format!("cannot start the event thread: {e}"),
            }
        })?;
        Ok(())
    }
}

impl SocialVpn {
    fn friend(&self, action: FriendAction, jid: String) -> Result<(), VpnError> {
        let request = Request::Friend {
            action,
            jid: jid.clone(),
        };
        match self.answer(request)? {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::BadJid => Err(VpnError::InvalidJid { jid }),
            Err(e) => Err(e.into()),
        }
    }

    /// A request whose answer is `Done`.
    fn done(&self, request: Request) -> Result<(), VpnError> {
        self.request(request).map(|_| ())
    }

    /// Runs one request of the control protocol and waits for its answer.
    fn request(&self, request: Request) -> Result<Response, VpnError> {
        Ok(self.answer(request)??)
    }

    /// The engine's answer, or why there was none.
    fn answer(&self, request: Request) -> Result<Result<Response, ApiError>, VpnError> {
        let response = self.call(move |e| Box::pin(async move { Ok(e.handle(request).await) }))?;
        Ok(response.into_result())
    }

    /// Runs one engine call and waits for its answer.
    fn call<T>(
        &self,
        request: impl for<'a> FnOnce(&'a Engine) -> EngineCall<'a, T>,
    ) -> Result<T, VpnError> {
        not_inside_engine()?;
        let engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
        let engine = engine.as_ref().ok_or(VpnError::Stopped)?;
        Ok(self.handle.block_on(request(engine))?)
    }
}

/// An answer of another kind than the request asks for: a bug of the engine's.
fn unexpected() -> VpnError {
    VpnError::Refused {
        reason: "the engine answered with an unexpected reply".into(),
    }
}

impl Drop for SocialVpn {
    fn drop(&mut self) {
        // The app dropped the object without `stop`: end the engine all the same (friends
        // then see the links time out instead of closing).
        let engine = self
            .engine
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = self.runtime.take() {
            if Handle::try_current().is_err() {
                if let Some(engine) = engine {
                    let _ = runtime.block_on(engine.shutdown());
                }
            }
            // Never blocks, also when dropped on a runtime thread.
            runtime.shutdown_background();
        }
    }
}

/// Blocking on the engine from one of its own threads would deadlock it (and tokio panics).
fn not_inside_engine() -> Result<(), VpnError> {
    match Handle::try_current() {
        Ok(_) => Err(VpnError::Reentrant),
        Err(_) => Ok(()),
    }
}

/// The file status flags of an open fd.
fn fd_flags(fd: i32) -> Option<i32> {
    // SAFETY: fcntl on any integer is safe; it fails for a closed descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    (flags >= 0).then_some(flags)
}

/// An open fd of the kind the platform's tunnel is: a character device (Linux and
/// Android tun) or a socket (Apple utun).
fn check_tunnel_fd(fd: i32) -> Result<(), VpnError> {
    let invalid = |reason: String| VpnError::InvalidFd { fd, reason };
    if fd < 0 {
        return Err(invalid("negative".into()));
    }
    // SAFETY: fstat writes into a zeroed local struct; any integer fd is safe to ask about.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above: `stat` is a valid out-struct, and fstat only reads `fd`.
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return Err(invalid(std::io::Error::last_os_error().to_string()));
    }
    let kind = stat.st_mode & libc::S_IFMT;
    let expected = if cfg!(target_vendor = "apple") {
        libc::S_IFSOCK
    } else {
        libc::S_IFCHR
    };
    if kind != expected {
        return Err(invalid(format!(
            "not a tunnel (file type {kind:o}, expected {expected:o})"
        )));
    }
    Ok(())
}
