//! The request-body extractor every JSON endpoint uses.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::{Result, ServerError};
use crate::AppState;

/// A JSON body whose rejections (malformed JSON, too large a body) are [`ServerError`]s.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for ApiJson<T> {
    type Rejection = ServerError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ServerError::PayloadTooLarge {
                    limit: state.opts.max_body_bytes,
                }
            } else {
                ServerError::bad_request(r.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ServerError::InvalidRequest {
                message: format!("the request body is not valid JSON for this endpoint: {e}"),
                param: None,
                code: Some("invalid_json"),
            })
    }
}
