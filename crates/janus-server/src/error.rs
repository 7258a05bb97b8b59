//! The server's error type and the one place that turns errors into HTTP responses.
//!
//! Every error leaves the server in OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`, with the status chosen by
//! [`ServerError::status`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The request is malformed or asks for something unsupported.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, with the numbers that disagree.
        message: String,
        /// The request field at fault (`messages[0].content[1].image_url`), if one is.
        param: Option<String>,
        /// A machine-readable reason, if there is one.
        code: Option<&'static str>,
    },
    /// The API key is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// No such route or file.
    #[error("{0}")]
    NotFound(String),
    /// The request names a model this server does not serve.
    #[error("{message}")]
    ModelNotFound {
        /// Which name was asked for and which are served.
        message: String,
        /// `model` when the name came from a request body.
        param: Option<String>,
    },
    /// The route exists but not for this method.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The request path.
        path: String,
    },
    /// The request body is over the size limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The queue in front of the model is full.
    #[error("the server is busy: {max} requests are already waiting for the model; retry later")]
    QueueFull {
        /// The queue's capacity (`--max-queue`).
        max: usize,
    },
    /// The server is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// An error from the model library: bad input (400) or a failure inside (500).
    #[error(transparent)]
    Model(#[from] janus::Error),
    /// A failure inside the server.
    #[error("{0}")]
    Internal(String),
}

impl ServerError {
    /// An invalid request about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ServerError::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    /// An invalid request with no single field at fault.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServerError::InvalidRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// The HTTP status this error is answered with: the only place statuses are chosen.
    pub fn status(&self) -> StatusCode {
        match self {
            ServerError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServerError::NotFound(_) | ServerError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ServerError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ServerError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServerError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ServerError::Model(e) if is_input_error(e) => StatusCode::BAD_REQUEST,
            ServerError::Model(_) | ServerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error `type`.
    fn kind(&self) -> &'static str {
        if let ServerError::ModelNotFound { .. } = self {
            // What OpenAI answers for a model it does not have (with status 404).
            return "invalid_request_error";
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's error `code`.
    fn code(&self) -> Option<&'static str> {
        match self {
            ServerError::InvalidRequest { code, .. } => *code,
            ServerError::Unauthorized(_) => Some("invalid_api_key"),
            ServerError::NotFound(_) => Some("not_found"),
            ServerError::ModelNotFound { .. } => Some("model_not_found"),
            ServerError::MethodNotAllowed { .. } => Some("method_not_allowed"),
            ServerError::PayloadTooLarge { .. } => Some("payload_too_large"),
            ServerError::QueueFull { .. } => Some("queue_full"),
            ServerError::ShuttingDown => Some("shutting_down"),
            ServerError::Model(janus::Error::Image { .. }) => Some("invalid_image"),
            ServerError::Model(_) | ServerError::Internal(_) => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ServerError::InvalidRequest { param, .. }
            | ServerError::ModelNotFound { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The JSON body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": ErrorBody {
            message: self.to_string(),
            kind: self.kind(),
            param: self.param(),
            code: self.code(),
        }})
    }
}

/// Library errors that the request caused (bad image, prompt too long, wrong placeholder
/// count) rather than the server.
fn is_input_error(e: &janus::Error) -> bool {
    matches!(
        e,
        janus::Error::InvalidInput(_) | janus::Error::Image { .. } | janus::Error::Tokenizer(_)
    )
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        (status, axum::Json(self.body())).into_response()
    }
}

/// Result alias for request handling.
pub type Result<T> = std::result::Result<T, ServerError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_shapes() {
        let e = ServerError::invalid("n", "n must be 1, got 2");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {"message": "n must be 1, got 2",
                "type": "invalid_request_error", "param": "n", "code": null}})
        );
        let e = ServerError::Model(janus::Error::InvalidInput("too long".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = ServerError::Model(janus::Error::Model("NaN".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body()["error"]["type"], "server_error");
        let e = ServerError::ModelNotFound {
            message: "no".into(),
            param: Some("model".into()),
        };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {"message": "no", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found"}})
        );
        let e = ServerError::QueueFull { max: 2 };
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.body()["error"]["code"], "queue_full");
    }
}
