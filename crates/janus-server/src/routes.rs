//! The router: routes, API-key check, request counting, body limit, and the small
//! endpoints (models, health, metrics, the web page).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::{Result, ServerError};
use crate::{chat, images, models, web, AppState};

/// All routes. The API routes (and `/metrics`) need the API key when one is set;
/// `/health`, the web page and generated files (unguessable names) do not.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/models", get(models::list))
        // Ids may hold slashes (`deepseek-ai/Janus-Pro-1B`).
        .route("/v1/models/{*id}", get(models::retrieve))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/v1/files/images/{name}", get(images::file))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        .with_state(state)
}

/// Refuses requests without `Authorization: Bearer <key>` when a key is set.
async fn require_key(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response> {
    if let Some(key) = &state.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match given {
            None => {
                return Err(ServerError::Unauthorized(
                    "missing API key: send it as the header `Authorization: Bearer KEY`".into(),
                ))
            }
            Some(token) if !same_key(token.as_bytes(), key.as_bytes()) => {
                return Err(ServerError::Unauthorized("incorrect API key".into()))
            }
            Some(_) => {}
        }
    }
    Ok(next.run(req).await)
}

/// Compares keys in time independent of where they differ.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts every answered request by route (the route pattern, `other` for unrouted
/// paths) and status.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    state.metrics.request(&route, resp.status().as_u16());
    resp
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let text = state
        .metrics
        .render(state.queue.len(), state.queue.capacity());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The web page's files for GET, a 404 in the API's error shape otherwise.
async fn fallback(method: Method, uri: Uri) -> Result<Response> {
    if method == Method::GET || method == Method::HEAD {
        if let Some((mime, bytes)) = web::asset(uri.path()) {
            return Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response());
        }
    }
    Err(ServerError::NotFound(format!(
        "no route for {method} {}",
        uri.path()
    )))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ServerError {
    ServerError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(same_key(b"abc", b"abc"));
        assert!(!same_key(b"abc", b"abd"));
        assert!(!same_key(b"abc", b"abcd"));
    }
}
