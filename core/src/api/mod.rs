//! The control protocol: everything a front end asks the engine (`Request`), what it answers
//! (`Response`), what it reports as it happens (`Event`), and the records those carry. Data
//! only: this layer knows nothing of the engine, so the CLI, the bindings, the test node and
//! the iOS app↔extension channel all speak exactly this.
//!
//! On the wire each message is one JSON object with the protocol version in `v`:
//! `{"v":1,"cmd":"friend","action":"add","jid":"bob@example.org"}` →
//! `{"v":1,"reply":"done"}`; events look like `{"v":1,"event":"roster_changed"}`. A request
//! is decoded strictly (unknown commands or fields are refused, never half done); replies and
//! events are read tolerantly (a newer engine may add fields). Bytes that do not decode get a
//! `Response::Error` of kind `BadRequest` or `UnsupportedVersion`.

mod event;
mod request;
mod response;
mod views;

pub use event::{Event, LinkChange, XmppStatus};
pub use request::{FriendAction, LogLevel, Request, UnknownAction};
pub use response::{ApiError, ErrorKind, Response};
pub use views::{DeviceView, FriendView, LinkPhase, LinkView, StatusView, Subscription};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this build speaks.
pub const API_VERSION: u32 = 1;

/// Longest request accepted (longer ones are refused unread).
pub const MAX_REQUEST: usize = 4096;

impl Request {
    /// Decodes one request (a trailing newline is allowed): exactly this version, every
    /// field known — a request this engine does not fully understand is refused whole.
    pub fn decode(bytes: &[u8]) -> Result<Request, ApiError> {
        if bytes.len() > MAX_REQUEST {
            return Err(bad(format!("request longer than {MAX_REQUEST} bytes")));
        }
        let object = object(bytes, |v| v == API_VERSION)?;
        let request =
            Request::deserialize(Value::Object(object.clone())).map_err(|e| bad(e.to_string()))?;
        // serde lets a variant without fields ignore any others ("sign_out" with an option
        // this engine does not have): every key must be one the request has.
        if let Ok(Value::Object(known)) = serde_json::to_value(&request) {
            if let Some(unknown) = object.keys().find(|k| !known.contains_key(*k)) {
                return Err(bad(format!("unknown field `{unknown}`")));
            }
        }
        Ok(request)
    }

    /// The request as one JSON object (no newline).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Response {
    /// Decodes a reply of this version or a later one (whose additions are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Response, ApiError> {
        let object = object(bytes, |v| v >= API_VERSION)?;
        Response::deserialize(Value::Object(object)).map_err(|e| bad(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Event {
    /// Decodes an event of this version or a later one (whose additions are ignored).
    pub fn decode(bytes: &[u8]) -> Result<Event, ApiError> {
        let object = object(bytes, |v| v >= API_VERSION)?;
        Event::deserialize(Value::Object(object)).map_err(|e| bad(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

fn bad(message: String) -> ApiError {
    ApiError {
        kind: ErrorKind::BadRequest,
        message,
    }
}

/// The message's JSON object without its version, if `accept` takes the version.
fn object(bytes: &[u8], accept: impl Fn(u32) -> bool) -> Result<Map<String, Value>, ApiError> {
    let mut object: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    match object.remove("v").map(|v| v.as_u64()) {
        Some(Some(v)) if u32::try_from(v).is_ok_and(&accept) => Ok(object),
        Some(Some(v)) => Err(ApiError {
            kind: ErrorKind::UnsupportedVersion,
            message: format!("protocol version {v}; this build speaks {API_VERSION}"),
        }),
        _ => Err(bad("no protocol version (\"v\")".into())),
    }
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Written straight into the bytes with the version as the first member. Going through a
    // `Value` tree first cost the daemon ~1.3 MiB of peak memory for a roster of 1 000
    // contacts (a map node and a key string per field), several times the bytes themselves.
    let head = format!("{{\"v\":{API_VERSION},");
    // Measured first, then written into a buffer of exactly that size: a growing buffer
    // would hold up to twice a large reply at its last doubling.
    let mut size = ByteCount(0);
    let body = serde_json::to_writer(&mut size, message).map_or(2, |()| size.0);
    let mut out = Vec::with_capacity(head.len() + body);
    out.extend_from_slice(head.as_bytes());
    let start = out.len();
    // Every message is an internally tagged enum: it serialises to an object, and plain
    // data cannot fail to serialise.
    if serde_json::to_writer(&mut out, message).is_err() || out.get(start) != Some(&b'{') {
        out.truncate(start);
        out.extend_from_slice(b"{}");
    }
    // `{"v":1,{"reply":…}` → `{"v":1,"reply":…}`; an empty object loses the comma too.
    out.remove(start);
    if out.get(start) == Some(&b'}') {
        out.remove(start - 1);
    }
    out
}

/// A writer that only counts what it is given.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
