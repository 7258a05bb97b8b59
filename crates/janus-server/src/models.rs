//! The served model's names: `GET /v1/models`, `GET /v1/models/{id}`, and the check of the
//! `model` field of requests.
//!
//! One model is served. Its id is the `--model` argument as given (`deepseek-ai/Janus-Pro-1B`,
//! `fixtures/models/tiny-pro`); requests may also name it by the id's last path component
//! (`Janus-Pro-1B`, `tiny-pro`) or as `janus`, compared without regard to ASCII case.
//! Anything else is a 404 `model_not_found`, as OpenAI answers for a model it does not
//! have, so a client pointed at the wrong server fails loudly instead of silently getting
//! another model's answers. A request without `model` uses the served model.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{Result, ServerError};
use crate::AppState;

/// The generic name every Janus server answers to.
pub const GENERIC_NAME: &str = "janus";

/// The names a request may use for the model served as `id`: the id itself, its last
/// path component and [`GENERIC_NAME`].
pub fn accepted_names(id: &str) -> Vec<String> {
    let mut names = vec![id.to_string()];
    if let Some(last) = id.trim_end_matches('/').rsplit('/').next() {
        if !last.is_empty() && last != id {
            names.push(last.to_string());
        }
    }
    names.push(GENERIC_NAME.to_string());
    names
}

impl AppState {
    /// Whether `name` names the served model.
    fn serves(&self, name: &str) -> bool {
        accepted_names(&self.opts.model_id)
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Refuses a request whose `model` field names a model this server does not serve.
    pub(crate) fn check_model(&self, model: Option<&str>) -> Result<()> {
        match model {
            Some(name) if !self.serves(name) => Err(self.model_not_found(name, Some("model"))),
            _ => Ok(()),
        }
    }

    fn model_not_found(&self, name: &str, param: Option<&str>) -> ServerError {
        ServerError::ModelNotFound {
            message: format!(
                "the model {name:?} does not exist: this server serves {:?} (also accepted: {})",
                self.opts.model_id,
                accepted_names(&self.opts.model_id)[1..]
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            param: param.map(str::to_string),
        }
    }

    /// The served model as an OpenAI `model` object.
    fn model_object(&self) -> Value {
        json!({
            "id": self.opts.model_id,
            "object": "model",
            "created": self.started,
            "owned_by": "janus",
        })
    }
}

/// `GET /v1/models`: the one model.
pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [state.model_object()]}))
}

/// `GET /v1/models/{id}`: the model, by any name it answers to (the object always carries
/// the served id); 404 `model_not_found` for any other.
pub(crate) async fn retrieve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    if state.serves(&id) {
        Ok(Json(state.model_object()))
    } else {
        Err(state.model_not_found(&id, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            accepted_names("deepseek-ai/Janus-Pro-1B"),
            ["deepseek-ai/Janus-Pro-1B", "Janus-Pro-1B", "janus"]
        );
        assert_eq!(
            accepted_names("fixtures/models/tiny-pro/"),
            ["fixtures/models/tiny-pro/", "tiny-pro", "janus"]
        );
        assert_eq!(accepted_names("tiny"), ["tiny", "janus"]);
    }
}
