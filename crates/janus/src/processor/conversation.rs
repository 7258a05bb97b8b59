//! The "deepseek" conversation template (`janus/utils/conversation.py`,
//! `SeparatorStyle.DeepSeek`) and the messages it renders.

use std::path::PathBuf;
use std::sync::Arc;

use image::DynamicImage;

use crate::error::{Error, Result};
use crate::processor::image::load_image;
use crate::processor::special_tokens::{BEGIN_OF_IMAGE, EOS_TOKEN, IMAGE_PLACEHOLDER};

/// The understanding system prompt (`VLChatProcessor.system_prompt`).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. \
You are able to understand the visual content that the user provides, \
and assist the user with a variety of tasks using natural language.";

/// Separator after even-indexed turns (the user's, in an alternating conversation).
const SEP: &str = "\n\n";
/// Separator after odd-indexed turns (the assistant's).
const SEP2: &str = EOS_TOKEN;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// The role names a model was trained with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Rendered name of [`Role::User`].
    pub user: String,
    /// Rendered name of [`Role::Assistant`].
    pub assistant: String,
}

impl Roles {
    /// Janus-Pro: `<|User|>` / `<|Assistant|>` (single tokens in its vocabulary).
    pub fn janus_pro() -> Self {
        Self {
            user: "<|User|>".into(),
            assistant: "<|Assistant|>".into(),
        }
    }

    /// Janus-1.3B: plain `User` / `Assistant`.
    pub fn janus() -> Self {
        Self {
            user: "User".into(),
            assistant: "Assistant".into(),
        }
    }

    /// The rendered name of `role`.
    pub fn name(&self, role: Role) -> &str {
        match role {
            Role::User => &self.user,
            Role::Assistant => &self.assistant,
        }
    }
}

/// An image attached to a message: a file to load, or an image the caller already decoded.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// A file on disk, decoded on [`ImageInput::load`].
    Path(PathBuf),
    /// An already decoded image (e.g. from a request body).
    Decoded(Arc<DynamicImage>),
}

impl ImageInput {
    /// The decoded image; loads it from disk for [`ImageInput::Path`].
    pub fn load(&self) -> Result<Arc<DynamicImage>> {
        match self {
            ImageInput::Path(path) => Ok(Arc::new(load_image(path)?)),
            ImageInput::Decoded(img) => Ok(Arc::clone(img)),
        }
    }
}

impl From<PathBuf> for ImageInput {
    fn from(path: PathBuf) -> Self {
        ImageInput::Path(path)
    }
}

impl From<DynamicImage> for ImageInput {
    fn from(img: DynamicImage) -> Self {
        ImageInput::Decoded(Arc::new(img))
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text; `<image_placeholder>` marks where each image goes.
    pub content: String,
    /// The images of this turn, in the order of their placeholders.
    pub images: Vec<ImageInput>,
}

impl Message {
    /// A user turn without images.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
            images: Vec::new(),
        }
    }

    /// Attaches images to this turn.
    pub fn with_images(mut self, images: impl IntoIterator<Item = impl Into<ImageInput>>) -> Self {
        self.images.extend(images.into_iter().map(Into::into));
        self
    }
}

/// Every image of `messages`, in prompt order (the order of their placeholders).
pub fn images_in_order(messages: &[Message]) -> impl Iterator<Item = &ImageInput> {
    messages.iter().flat_map(|m| m.images.iter())
}

/// Python's `str.strip()` with no argument: trims Unicode whitespace plus the ASCII
/// information separators U+001C..U+001F, which Python counts as whitespace and Rust
/// does not.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Renders a conversation for understanding, exactly as
/// `VLChatProcessor.apply_sft_template_for_multi_turn_prompts` with the "deepseek" template.
///
/// - `system + "\n\n"` first when `system` is set and non-empty;
/// - each message's content is stripped; a non-empty one renders as
///   `role + ": " + content + sep`, an empty one as `role + ":"` (no separator);
/// - `sep` alternates by message *index* as in `conversation.py` (`seps[i % 2]`):
///   `"\n\n"` after even turns, `<｜end▁of▁sentence｜>` after odd ones, which is
///   "after user" / "after assistant" for an alternating conversation;
/// - when the last message is the user's, an empty assistant turn is appended, as the
///   reference's callers do, so the prompt ends with `role + ":"` for the model to answer;
/// - the whole string is stripped.
///
/// Placeholders are rendered as written: see [`with_image_placeholders`] for the CLI rule
/// that adds them.
pub fn render_understanding(messages: &[Message], roles: &Roles, system: Option<&str>) -> String {
    let open_assistant = messages.last().is_some_and(|m| m.role == Role::User);
    let turns = messages
        .iter()
        .map(|m| (m.role, m.content.as_str()))
        .chain(open_assistant.then_some((Role::Assistant, "")));
    render_turns(turns, roles, system)
}

/// Renders a text-to-image prompt as `generation_inference.py` does: the template with no
/// system prompt over `[user: prompt, assistant: ""]`, followed by `<begin_of_image>`, i.e.
/// `"{user}: {prompt}\n\n{assistant}:<begin_of_image>"`.
pub fn render_generation(prompt: &str, roles: &Roles) -> String {
    let turns = [(Role::User, prompt), (Role::Assistant, "")];
    let mut out = render_turns(turns.into_iter(), roles, None);
    out.push_str(BEGIN_OF_IMAGE);
    out
}

fn render_turns<'a>(
    turns: impl Iterator<Item = (Role, &'a str)>,
    roles: &Roles,
    system: Option<&str>,
) -> String {
    let mut out = String::new();
    if let Some(system) = system.filter(|s| !s.is_empty()) {
        out.push_str(system);
        out.push_str(SEP);
    }
    for (i, (role, content)) in turns.enumerate() {
        let content = py_strip(content);
        out.push_str(roles.name(role));
        if content.is_empty() {
            out.push(':');
        } else {
            out.push_str(": ");
            out.push_str(content);
            out.push_str(if i % 2 == 0 { SEP } else { SEP2 });
        }
    }
    py_strip(&out).to_string()
}

/// Applies the CLI placeholder rule to one message's text.
///
/// With no `<image_placeholder>` in `content` and `num_images` images, prepends
/// `num_images` × `"<image_placeholder>\n"` (the layout of the reference examples). When
/// `content` has markers, their count must equal `num_images`, else [`Error::InvalidInput`].
pub fn with_image_placeholders(content: &str, num_images: usize) -> Result<String> {
    let markers = content.matches(IMAGE_PLACEHOLDER).count();
    if markers == 0 {
        let mut out =
            String::with_capacity(num_images * (IMAGE_PLACEHOLDER.len() + 1) + content.len());
        for _ in 0..num_images {
            out.push_str(IMAGE_PLACEHOLDER);
            out.push('\n');
        }
        out.push_str(content);
        Ok(out)
    } else if markers == num_images {
        Ok(content.to_string())
    } else {
        Err(Error::InvalidInput(format!(
            "message has {markers} {IMAGE_PLACEHOLDER} markers but {num_images} images"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_deepseek_template() {
        let msgs = [
            Message::user("Hello!"),
            Message::assistant("Hi! This is Tony."),
            Message::user("  Who are you?\n"),
        ];
        let out = render_understanding(&msgs, &Roles::janus_pro(), Some("SYS"));
        assert_eq!(
            out,
            "SYS\n\n<|User|>: Hello!\n\n<|Assistant|>: Hi! This is Tony.<｜end▁of▁sentence｜>\
             <|User|>: Who are you?\n\n<|Assistant|>:"
        );
    }

    #[test]
    fn explicit_final_assistant_turn_is_not_doubled() {
        let msgs = [Message::user("x"), Message::assistant("")];
        let out = render_understanding(&msgs, &Roles::janus(), None);
        assert_eq!(out, "User: x\n\nAssistant:");
    }

    #[test]
    fn empty_system_is_omitted_and_result_stripped() {
        let msgs = [Message::user("")];
        assert_eq!(
            render_understanding(&msgs, &Roles::janus(), Some("")),
            "User:Assistant:"
        );
        assert_eq!(py_strip("\u{1f} a \u{3000}"), "a");
    }

    #[test]
    fn generation_prompt() {
        assert_eq!(
            render_generation(" a cat ", &Roles::janus_pro()),
            "<|User|>: a cat\n\n<|Assistant|>:<begin_of_image>"
        );
    }

    #[test]
    fn placeholders() {
        assert_eq!(with_image_placeholders("hi", 0).unwrap(), "hi");
        assert_eq!(
            with_image_placeholders("hi", 2).unwrap(),
            "<image_placeholder>\n<image_placeholder>\nhi"
        );
        assert_eq!(
            with_image_placeholders("a <image_placeholder> b", 1).unwrap(),
            "a <image_placeholder> b"
        );
        let err = with_image_placeholders("<image_placeholder><image_placeholder>", 3).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains('2') && msg.contains('3'), "{msg}");
        assert!(with_image_placeholders("<image_placeholder>", 0).is_err());
    }
}
