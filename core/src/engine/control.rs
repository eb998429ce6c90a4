//! The control protocol's one entry point (`Engine::handle`): the node answers most
//! requests; the log level, signing out and the event log are the shell's.

use super::{Command, Engine, EngineError};
use crate::api::{ApiError, Request, Response};
use std::time::Duration;
use tokio::sync::oneshot;

impl Engine {
    /// Answers one request of the control protocol: the one entry point of every front end.
    pub async fn handle(&self, request: Request) -> Response {
        match self.call(request).await {
            Ok(response) => response,
            Err(e) => Response::Error {
                error: ApiError::from(&e),
            },
        }
    }

    /// Decodes a request, answers it and encodes the reply: the byte channel of the iOS
    /// app↔extension messages and the CLI's control socket. Bytes that are no request get
    /// an error reply, never a partial action.
    pub async fn handle_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match Request::decode(bytes) {
            Ok(request) => self.handle(request).await.encode(),
            Err(error) => Response::Error { error }.encode(),
        }
    }

    async fn call(&self, request: Request) -> Result<Response, EngineError> {
        match request {
            Request::SetLogLevel { level } => {
                if !crate::logging::set_level(level) {
                    return Err(EngineError::NoLogControl);
                }
                Ok(Response::Done)
            }
            Request::SignOut => {
                // The engine task says goodbye to friends and signs off as it ends.
                let (tx, rx) = oneshot::channel();
                self.commands
                    .send(Command::Stop(tx))
                    .await
                    .map_err(|_| EngineError::Stopped)?;
                let _ = rx.await;
                self.stopped().await;
                Ok(Response::Done)
            }
            // Answered from the log, never by the engine task (a reply may wait 30 s).
            Request::Events { after, wait_ms } => Ok(self
                .log
                .answer(after, Duration::from_millis(u64::from(wait_ms)))
                .await),
            request => self.ask(|tx| Command::Request(request, tx)).await,
        }
    }
}
