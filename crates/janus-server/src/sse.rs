//! Server-sent events shared by the streaming endpoints.

use axum::response::sse::Event;
use serde::Serialize;

use crate::error::ServerError;

/// An SSE event whose data is `v` as JSON.
pub(crate) fn json_event(v: &impl Serialize) -> Event {
    Event::default().data(serde_json::to_string(v).unwrap_or_else(|e| {
        ServerError::Internal(format!("cannot serialise an event: {e}"))
            .body()
            .to_string()
    }))
}
