//! Requests a local front end sends the daemon (the CLI's control socket): one JSON object
//! per line, decoded here into a typed request before anything acts on it.
//!
//! Only the socket's owner can connect, but the bytes are still input: a request that does
//! not decode is answered with an error, never acted upon in part.

use crate::engine::FriendAction;
use serde::{Deserialize, Serialize};

/// Longest request line accepted (longer ones are refused unread).
pub const MAX_REQUEST: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Status,
    Roster,
    NetworkChanged,
    Friend {
        action: FriendAction,
        /// A bare JID; checked when the action runs.
        jid: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("bad request: {0}")]
    Malformed(String),
}

impl Request {
    /// Decodes one request line (its trailing newline optional).
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST {
            return Err(RequestError::TooLong);
        }
        serde_json::from_slice(line).map_err(|e| RequestError::Malformed(e.to_string()))
    }

    /// The request as one line (without the newline).
    pub fn to_line(&self) -> String {
        // Serialising plain enums and strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_decode_strictly() {
        assert_eq!(
            Request::parse(br#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
        let friend =
            Request::parse(b"{\"cmd\":\"friend\",\"action\":\"add\",\"jid\":\"b@x.org\"}\n")
                .unwrap();
        assert_eq!(
            friend,
            Request::Friend {
                action: FriendAction::Add,
                jid: "b@x.org".into()
            }
        );
        assert_eq!(Request::parse(friend.to_line().as_bytes()), Ok(friend));
        for bad in [
            &br#"{"cmd":"reboot"}"#[..],
            br#"{"cmd":"friend","action":"befriend","jid":"b@x.org"}"#,
            br#"{"cmd":"friend","jid":"b@x.org"}"#,
            br#"{"cmd":"friend","action":"add","jid":"b@x.org","as":"root"}"#,
            b"[]",
            b"",
        ] {
            assert!(
                matches!(Request::parse(bad), Err(RequestError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(
            r#"{{"cmd":"friend","action":"add","jid":"{}"}}"#,
            "a".repeat(5000)
        );
        assert_eq!(Request::parse(long.as_bytes()), Err(RequestError::TooLong));
    }
}
