//! OpenAI chat messages to the library's [`Message`]s: roles, text and image parts, and
//! image URLs (`data:` URLs, and http(s) URLs where the server allows them).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use janus::processor::{ImageInput, Message, Role, DEFAULT_SYSTEM_PROMPT, IMAGE_PLACEHOLDER};

use crate::api::{ChatMessage, ContentPart, MessageContent};
use crate::error::{Result, ServerError};

/// How long fetching a remote image may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A conversation ready for `Pipeline::understand`.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The system prompt: the system messages' text, or the reference's when there are none.
    pub system: Option<String>,
    /// User and assistant turns, images decoded.
    pub messages: Vec<Message>,
}

/// Where images may come from.
#[derive(Debug, Clone, Copy)]
pub struct ImageSources {
    /// Fetch http(s) URLs (`--allow-remote-images`).
    pub allow_remote: bool,
    /// Largest image accepted, in bytes.
    pub max_bytes: usize,
}

/// Builds the conversation. Blocking (decodes images, may fetch them): run it off the
/// async threads.
///
/// - `system` and `developer` messages become the system prompt (joined by a blank line);
///   none gives the reference's understanding prompt, an empty one none at all;
/// - a message's parts are joined by newlines, each image part standing as
///   `<image_placeholder>`, so `[image, text]` renders as the reference demo's
///   `"<image_placeholder>\ntext"`;
/// - the last turn must be the user's.
pub fn build(messages: Vec<ChatMessage>, sources: ImageSources) -> Result<Conversation> {
    if messages.is_empty() {
        return Err(ServerError::invalid(
            "messages",
            "messages must hold at least one message",
        ));
    }
    let mut system: Option<Vec<String>> = None;
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        match m.role.as_str() {
            "system" | "developer" => {
                let (text, images) = content(m.content, &param, sources)?;
                if !images.is_empty() {
                    return Err(ServerError::invalid(
                        format!("{param}.content"),
                        "system messages cannot hold images",
                    ));
                }
                system.get_or_insert_with(Vec::new).push(text);
            }
            "user" | "assistant" => {
                let role = if m.role == "user" {
                    Role::User
                } else {
                    Role::Assistant
                };
                let (text, images) = content(m.content, &param, sources)?;
                if role == Role::Assistant && !images.is_empty() {
                    return Err(ServerError::invalid(
                        format!("{param}.content"),
                        "assistant messages cannot hold images",
                    ));
                }
                turns.push(Message {
                    role,
                    content: text,
                    images,
                });
            }
            other => {
                return Err(ServerError::invalid(
                    format!("{param}.role"),
                    format!(
                        "unsupported role {other:?} (use \"system\", \"developer\", \"user\" or \"assistant\")"
                    ),
                ))
            }
        }
    }
    match turns.last() {
        Some(m) if m.role == Role::User => {}
        _ => {
            return Err(ServerError::invalid(
                "messages",
                "the last message (other than system messages) must be the user's",
            ))
        }
    }
    let system = match system {
        None => Some(DEFAULT_SYSTEM_PROMPT.to_string()),
        Some(parts) => Some(parts.join("\n\n")).filter(|s| !s.is_empty()),
    };
    Ok(Conversation {
        system,
        messages: turns,
    })
}

/// A message's text (image parts as placeholders) and its images.
fn content(
    content: Option<MessageContent>,
    param: &str,
    sources: ImageSources,
) -> Result<(String, Vec<ImageInput>)> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(MessageContent::Text(t)) => Ok((t, Vec::new())),
        Some(MessageContent::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            let mut images = Vec::new();
            for (j, part) in parts.into_iter().enumerate() {
                match part {
                    ContentPart::Text { text } => texts.push(text),
                    ContentPart::ImageUrl { image_url } => {
                        let p = format!("{param}.content[{j}].image_url");
                        let img = load_image_url(image_url.url(), &p, sources)?;
                        images.push(ImageInput::Decoded(Arc::new(img)));
                        texts.push(IMAGE_PLACEHOLDER.to_string());
                    }
                }
            }
            Ok((texts.join("\n"), images))
        }
    }
}

/// Decodes an image given by URL: a base64 `data:` URL, or an http(s) URL fetched when
/// `sources.allow_remote` is set. `param` names the field in errors.
pub fn load_image_url(
    url: &str,
    param: &str,
    sources: ImageSources,
) -> Result<image::DynamicImage> {
    let bytes = if let Some(rest) = url.strip_prefix("data:") {
        data_url_bytes(rest, param)?
    } else if url.starts_with("http://") || url.starts_with("https://") {
        if !sources.allow_remote {
            return Err(ServerError::InvalidRequest {
                message: "remote image URLs are disabled on this server: send the image inline \
                          as a data: URL (data:image/png;base64,...), or start the server with \
                          --allow-remote-images"
                    .into(),
                param: Some(param.into()),
                code: Some("remote_images_disabled"),
            });
        }
        fetch(url, param, sources.max_bytes)?
    } else {
        let shown: String = url.chars().take(32).collect();
        return Err(ServerError::invalid(
            param,
            format!("image URL {shown:?}... is neither a data: URL nor an http(s) URL"),
        ));
    };
    janus::processor::load_image_from_memory(&bytes, param).map_err(|e| {
        ServerError::InvalidRequest {
            message: e.to_string(),
            param: Some(param.into()),
            code: Some("invalid_image"),
        }
    })
}

/// The bytes of a `data:[<media type>];base64,<data>` URL (without its `data:`).
fn data_url_bytes(rest: &str, param: &str) -> Result<Vec<u8>> {
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(ServerError::invalid(
            param,
            "data: URL has no ',' before its data",
        ));
    };
    let mut fields = meta.split(';');
    let media = fields.next().unwrap_or("").trim().to_ascii_lowercase();
    if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
        return Err(ServerError::invalid(
            param,
            "data: URL must be base64-encoded (data:image/png;base64,...)",
        ));
    }
    if !media.is_empty() && !media.starts_with("image/") {
        return Err(ServerError::invalid(
            param,
            format!("data: URL has media type {media:?}, expected an image (PNG, JPEG or WebP)"),
        ));
    }
    // Some clients wrap long base64 lines.
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| ServerError::InvalidRequest {
            message: format!("data: URL is not valid base64: {e}"),
            param: Some(param.into()),
            code: Some("invalid_base64"),
        })
}

/// Downloads a remote image, at most `max_bytes`.
fn fetch(url: &str, param: &str, max_bytes: usize) -> Result<Vec<u8>> {
    let fail = |msg: String| ServerError::InvalidRequest {
        message: format!("cannot fetch image {url}: {msg}"),
        param: Some(param.into()),
        code: Some("image_fetch_failed"),
    };
    let agent = ureq::AgentBuilder::new().timeout(FETCH_TIMEOUT).build();
    let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(fail(format!("larger than the limit of {max_bytes} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: ImageSources = ImageSources {
        allow_remote: false,
        max_bytes: 1 << 20,
    };

    #[test]
    fn data_urls() {
        assert_eq!(data_url_bytes("image/png;base64,aGk=", "p").unwrap(), b"hi");
        assert_eq!(data_url_bytes(";base64,aG\nk=", "p").unwrap(), b"hi");
        for bad in [
            "image/png,aGk=",
            "image/png;base64",
            "text/plain;base64,aGk=",
        ] {
            assert!(data_url_bytes(bad, "p").is_err(), "{bad}");
        }
        let e = data_url_bytes("image/png;base64,@@@", "p").unwrap_err();
        assert_eq!(e.body()["error"]["code"], "invalid_base64");
    }

    #[test]
    fn remote_urls_need_permission() {
        let e = load_image_url("https://example.com/a.png", "x", SOURCES).unwrap_err();
        assert_eq!(e.body()["error"]["code"], "remote_images_disabled");
        assert_eq!(e.body()["error"]["param"], "x");
        assert!(load_image_url("ftp://x", "x", SOURCES).is_err());
    }

    #[test]
    fn roles_and_system_prompt() {
        let msg = |role: &str, text: &str| ChatMessage {
            role: role.into(),
            content: Some(MessageContent::Text(text.into())),
        };
        let c = build(vec![msg("user", "hi")], SOURCES).unwrap();
        assert_eq!(c.system.as_deref(), Some(DEFAULT_SYSTEM_PROMPT));
        let c = build(vec![msg("system", ""), msg("user", "hi")], SOURCES).unwrap();
        assert_eq!(c.system, None);
        let c = build(
            vec![msg("system", "a"), msg("developer", "b"), msg("user", "hi")],
            SOURCES,
        )
        .unwrap();
        assert_eq!(c.system.as_deref(), Some("a\n\nb"));
        assert!(build(vec![], SOURCES).is_err());
        assert!(build(vec![msg("user", "a"), msg("assistant", "b")], SOURCES).is_err());
        let e = build(vec![msg("tool", "a")], SOURCES).unwrap_err();
        assert_eq!(e.body()["error"]["param"], "messages[0].role");
    }
}
