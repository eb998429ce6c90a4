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

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The protocol version this build speaks.
pub const API_VERSION: u32 = 1;

/// Longest request accepted (longer ones are refused unread).
pub const MAX_REQUEST: usize = 4096;

impl Request {
    /// Decodes one request (a trailing newline is allowed).
    pub fn decode(bytes: &[u8]) -> Result<Request, ApiError> {
        if bytes.len() > MAX_REQUEST {
            return Err(bad(format!("request longer than {MAX_REQUEST} bytes")));
        }
        decode(bytes)
    }

    /// The request as one JSON object (no newline).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Response {
    pub fn decode(bytes: &[u8]) -> Result<Response, ApiError> {
        decode(bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Event {
    pub fn decode(bytes: &[u8]) -> Result<Event, ApiError> {
        decode(bytes)
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

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut object: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    match object.remove("v").map(|v| v.as_u64()) {
        Some(Some(v)) if v == u64::from(API_VERSION) => {}
        Some(Some(v)) => {
            return Err(ApiError {
                kind: ErrorKind::UnsupportedVersion,
                message: format!("protocol version {v}; this engine speaks {API_VERSION}"),
            })
        }
        _ => return Err(bad("no protocol version (\"v\")".into())),
    }
    T::deserialize(Value::Object(object)).map_err(|e| bad(e.to_string()))
}

fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Every message is an internally tagged enum: it serialises to an object, and plain
    // data cannot fail to serialise.
    let mut object = match serde_json::to_value(message) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    };
    object.insert("v".into(), Value::from(API_VERSION));
    serde_json::to_vec(&object).unwrap_or_default()
}

#[cfg(test)]
mod tests;
