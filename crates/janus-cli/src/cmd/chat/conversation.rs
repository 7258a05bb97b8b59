//! The conversation a chat keeps: every turn with its images, and its JSON form.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use image::DynamicImage;
use janus::processor::{load_image, ImageInput, Message, Role};
use serde::Serialize;

use crate::output;

/// An image the user attached: decoded once, when attached, so a bad file is reported
/// then and later turns do not read the disk again.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Where it came from (absolute), for `/save`.
    pub path: PathBuf,
    /// The decoded image.
    pub image: Arc<DynamicImage>,
}

impl Attachment {
    /// Loads and decodes `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let image = Arc::new(load_image(path)?);
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Self { path, image })
    }

    /// File name and size, for status lines.
    pub fn describe(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string());
        format!("{name} ({}x{})", self.image.width(), self.image.height())
    }
}

/// One turn and the files its images came from.
#[derive(Debug, Clone)]
struct Turn {
    message: Message,
    image_paths: Vec<PathBuf>,
}

/// The whole conversation so far, user and assistant turns alternating.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    turns: Vec<Turn>,
}

impl Conversation {
    /// Adds a user turn with its images.
    pub fn push_user(&mut self, text: String, images: Vec<Attachment>) {
        let image_paths = images.iter().map(|a| a.path.clone()).collect();
        let message = Message::user(text)
            .with_images(images.into_iter().map(|a| ImageInput::Decoded(a.image)));
        self.turns.push(Turn {
            message,
            image_paths,
        });
    }

    /// Adds an assistant turn.
    pub fn push_assistant(&mut self, text: String) {
        self.turns.push(Turn {
            message: Message::assistant(text),
            image_paths: Vec::new(),
        });
    }

    /// Drops the last turn (a user message that could not be answered).
    pub fn pop(&mut self) {
        self.turns.pop();
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.turns.clear();
    }

    /// Number of turns.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// The turns as the pipeline takes them (images are shared, not copied).
    pub fn messages(&self) -> Vec<Message> {
        self.turns.iter().map(|t| t.message.clone()).collect()
    }

    /// The JSON text `/save` writes:
    /// `{"model", "system", "messages": [{"role", "content", "images": [paths]}]}`.
    pub fn to_json(&self, model: &str, system: Option<&str>) -> Result<String> {
        let saved = SavedChat {
            model,
            system,
            messages: self
                .turns
                .iter()
                .map(|t| SavedMessage {
                    role: match t.message.role {
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    },
                    content: &t.message.content,
                    images: t
                        .image_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&saved)?;
        text.push('\n');
        Ok(text)
    }

    /// Writes [`Conversation::to_json`] to `path` atomically (temporary file and rename),
    /// replacing an existing file.
    pub fn save(&self, path: &Path, model: &str, system: Option<&str>) -> Result<()> {
        output::write_atomic(path, self.to_json(model, system)?.as_bytes(), true)
    }
}

/// The `/save` file; fields in the order they are written.
#[derive(Serialize)]
struct SavedChat<'a> {
    model: &'a str,
    system: Option<&'a str>,
    messages: Vec<SavedMessage<'a>>,
}

/// One turn in the `/save` file.
#[derive(Serialize)]
struct SavedMessage<'a> {
    role: &'static str,
    content: &'a str,
    images: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn attachment(name: &str) -> Attachment {
        Attachment {
            path: PathBuf::from(name),
            image: Arc::new(DynamicImage::new_rgb8(3, 2)),
        }
    }

    #[test]
    fn json_keeps_roles_text_and_image_paths() {
        let mut c = Conversation::default();
        c.push_user(
            "look".into(),
            vec![attachment("/a.png"), attachment("/b.png")],
        );
        c.push_assistant("two squares".into());
        let text = c.to_json("tiny", Some("sys")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let order: Vec<_> = ["\"model\"", "\"system\"", "\"messages\""]
            .iter()
            .map(|k| text.find(k).unwrap())
            .collect();
        assert!(order.is_sorted(), "{text}");
        assert_eq!(v["model"], "tiny");
        assert_eq!(v["system"], "sys");
        assert_eq!(v["messages"][0]["role"], "user");
        assert_eq!(v["messages"][0]["images"], json!(["/a.png", "/b.png"]));
        assert_eq!(v["messages"][1]["role"], "assistant");
        assert_eq!(v["messages"][1]["content"], "two squares");
        assert_eq!(v["messages"][1]["images"], json!([]));
        assert_eq!(c.messages()[0].images.len(), 2);
        let v: Value = serde_json::from_str(&c.to_json("tiny", None).unwrap()).unwrap();
        assert_eq!(v["system"], Value::Null);
    }

    #[test]
    fn pop_and_clear() {
        let mut c = Conversation::default();
        c.push_user("a".into(), Vec::new());
        c.push_assistant("b".into());
        c.push_user("c".into(), Vec::new());
        c.pop();
        assert_eq!(c.len(), 2);
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn save_writes_complete_json_and_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Conversation::default();
        c.push_user("hi".into(), Vec::new());
        let path = dir.path().join("chat.json");
        c.save(&path, "m", None).unwrap();
        c.save(&path, "m", None).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["messages"][0]["content"], "hi");
        assert!(c
            .save(&dir.path().join("no/such/dir.json"), "m", None)
            .is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["chat.json"]);
    }

    #[test]
    fn bad_image_is_an_error() {
        assert!(Attachment::load(Path::new("/no/such/image.png")).is_err());
    }
}
