//! The special tokens' strings. Both the tokenizer (which resolves their ids) and the
//! prompt templates use them.

/// Beginning-of-sequence token; the reference prepends it to every prompt.
pub const BOS_TOKEN: &str = "<｜begin▁of▁sentence｜>";
/// End-of-sequence token; ends an assistant turn and stops decoding.
pub const EOS_TOKEN: &str = "<｜end▁of▁sentence｜>";
/// Padding token; fills the unconditional row of classifier-free guidance.
pub const PAD_TOKEN: &str = "<｜▁pad▁｜>";
/// Marks where an image goes in a prompt; also the token the image embeddings overwrite.
pub const IMAGE_PLACEHOLDER: &str = "<image_placeholder>";
/// Opens a run of image tokens (and starts text-to-image generation).
pub const BEGIN_OF_IMAGE: &str = "<begin_of_image>";
/// Closes a run of image tokens.
pub const END_OF_IMAGE: &str = "<end_of_image>";
/// Janus-Pro's user role, a single token in its vocabulary.
pub const PRO_USER_ROLE: &str = "<|User|>";
