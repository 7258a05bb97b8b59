//! The Janus tokenizer: a byte-level BPE `tokenizer.json` plus the special tokens the
//! model needs, resolved by their strings (never by hard-coded ids), and a streaming
//! decoder that only ever emits complete UTF-8 text.

use std::path::Path;

use crate::error::{Error, Result};
use crate::processor::conversation::Roles;

pub use super::special_tokens::{
    BEGIN_OF_IMAGE, BOS_TOKEN, END_OF_IMAGE, EOS_TOKEN, IMAGE_PLACEHOLDER, PAD_TOKEN, PRO_USER_ROLE,
};

/// A token's `start..end` byte offsets in the text it came from.
pub type ByteRange = (usize, usize);

/// The ids of the special tokens, as found in the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Id of [`BOS_TOKEN`].
    pub bos: u32,
    /// Id of [`EOS_TOKEN`].
    pub eos: u32,
    /// Id of [`PAD_TOKEN`].
    pub pad: u32,
    /// Id of [`IMAGE_PLACEHOLDER`].
    pub image_placeholder: u32,
    /// Id of [`BEGIN_OF_IMAGE`].
    pub begin_of_image: u32,
    /// Id of [`END_OF_IMAGE`].
    pub end_of_image: u32,
}

/// A `tokenizers::Tokenizer` with the Janus special tokens and conversation roles resolved.
#[derive(Debug, Clone)]
pub struct JanusTokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    roles: Roles,
}

impl JanusTokenizer {
    /// Loads a `tokenizer.json` and resolves the special tokens.
    ///
    /// Fails with [`Error::Io`] when the file cannot be read and [`Error::Tokenizer`]
    /// when it does not parse or lacks one of the special tokens.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // tokenizers unwraps inside some of its Deserialize impls (decoders), so a corrupt
        // file can panic in it: turn that into an error naming the file.
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(&bytes))
            .map_err(|_| Error::Tokenizer(format!("{}: malformed tokenizer", path.display())))?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::from_tokenizer(inner)
    }

    /// Wraps an already loaded tokenizer, resolving the special tokens by string.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer) -> Result<Self> {
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| {
                Error::Tokenizer(format!("token {token} is missing from the vocabulary"))
            })
        };
        let special = SpecialTokens {
            bos: id(BOS_TOKEN)?,
            eos: id(EOS_TOKEN)?,
            pad: id(PAD_TOKEN)?,
            image_placeholder: id(IMAGE_PLACEHOLDER)?,
            begin_of_image: id(BEGIN_OF_IMAGE)?,
            end_of_image: id(END_OF_IMAGE)?,
        };
        // Janus-Pro's template uses `<|User|>`/`<|Assistant|>` and ships them as single
        // tokens; Janus-1.3B's tokenizer lacks them and its template says `User`/`Assistant`.
        let roles = if inner.token_to_id(PRO_USER_ROLE).is_some() {
            Roles::janus_pro()
        } else {
            Roles::janus()
        };
        Ok(Self {
            inner,
            special,
            roles,
        })
    }

    /// The special token ids.
    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    /// Checks that every special token's id indexes an embedding table of `vocab_size`
    /// rows (a tokenizer from another model would index past it).
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        let s = self.special();
        let max = [
            s.bos,
            s.eos,
            s.pad,
            s.image_placeholder,
            s.begin_of_image,
            s.end_of_image,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if max as usize >= vocab_size {
            return Err(Error::Tokenizer(format!(
                "special token id {max} is outside the model's vocabulary of {vocab_size}"
            )));
        }
        Ok(())
    }

    /// The conversation roles this tokenizer's model was trained with.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `token` (a vocabulary entry or an added token), if present.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        id == self.special.eos
    }

    /// Tokenises `text` with exactly one leading BOS.
    ///
    /// The reference (`tokenizer.encode(prompt)`) relies on the post-processor to add BOS.
    /// Some `tokenizer.json` files have no such post-processor, and a text that itself
    /// starts with the BOS string would get a second one: both are normalised here.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        let ids = encoding.get_ids();
        let bos = self.special.bos;
        let leading_bos = ids.iter().take_while(|&&id| id == bos).count();
        let mut out = Vec::with_capacity(ids.len() + 1);
        out.push(bos);
        out.extend_from_slice(&ids[leading_bos..]);
        Ok(out)
    }

    /// [`Self::encode`] with each token's byte range in `text` (the BOS has `0..0`);
    /// training uses the ranges to find which tokens belong to an answer.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<ByteRange>)> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(format!("encoding failed: {e}")))?;
        let (ids, offsets) = (encoding.get_ids(), encoding.get_offsets());
        let bos = self.special.bos;
        let leading_bos = ids.iter().take_while(|&&id| id == bos).count();
        let mut out_ids = vec![bos];
        let mut out_offsets = vec![(0, 0)];
        out_ids.extend_from_slice(&ids[leading_bos..]);
        out_offsets.extend_from_slice(&offsets[leading_bos..]);
        Ok((out_ids, out_offsets))
    }

    /// Decodes `ids` to text, dropping special tokens when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(format!("decoding failed: {e}")))
    }

    /// Starts an incremental decoder for streaming generated tokens.
    pub fn stream(&self, skip_special: bool) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            skip_special,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }
}

/// Incremental decoder: push ids one at a time and get back the text they complete.
///
/// Byte-level BPE tokens can split a multi-byte UTF-8 character; the partial bytes decode
/// to U+FFFD. Text is held back while the decoded tail ends in U+FFFD and released once
/// the character completes. The concatenation of every piece returned by [`push`] and
/// [`finish`] equals `decode(all ids)`.
///
/// Only a window of recent ids is decoded per push (the scheme used by
/// text-generation-inference): `prefix_offset..read_offset` is text already emitted, kept
/// as context, and the new piece is what `decode(prefix_offset..)` adds to it.
///
/// [`push`]: TokenStream::push
/// [`finish`]: TokenStream::finish
#[derive(Debug)]
pub struct TokenStream<'a> {
    tokenizer: &'a JanusTokenizer,
    skip_special: bool,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TokenStream<'_> {
    /// Adds one id; returns the newly completed text, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        self.next_piece(false)
    }

    /// Flushes whatever is held back (e.g. an incomplete character at the very end,
    /// emitted as U+FFFD exactly as a full decode would render it).
    pub fn finish(&mut self) -> Result<Option<String>> {
        self.next_piece(true)
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn next_piece(&mut self, flush: bool) -> Result<Option<String>> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let tok = self.tokenizer;
        let prefix = tok.decode(
            &self.ids[self.prefix_offset..self.read_offset],
            self.skip_special,
        )?;
        let full = tok.decode(&self.ids[self.prefix_offset..], self.skip_special)?;
        if !flush && full.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(None);
        }
        let Some(piece) = full.strip_prefix(prefix.as_str()) else {
            // A byte-level decoder always extends the window's text; anything else means a
            // context-dependent decoder, for which we wait for more ids (or the flush).
            if flush {
                return Err(Error::Tokenizer(format!(
                    "streaming decode is not prefix-stable: {prefix:?} then {full:?}"
                )));
            }
            return Ok(None);
        };
        let piece = piece.to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok((!piece.is_empty()).then_some(piece))
    }
}
