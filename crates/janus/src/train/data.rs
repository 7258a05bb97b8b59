//! Training data: the manifest naming JSONL files per kind of data, and their records.
//!
//! ```json
//! {"understanding": ["und.jsonl"], "text": ["text.jsonl"], "t2i": ["imagenet.jsonl"],
//!  "t2i_after": {"step": 120000, "files": ["captions.jsonl"]}}
//! ```
//! Any key may be absent. JSONL paths are relative to the manifest, image paths to their
//! JSONL file. Records:
//! - understanding: `{"images": [...], "conversation": [{"role": "user"|"assistant",
//!   "content": ...}]}`, or LLaVA's `{"image": ..., "conversations": [{"from": "human"|"gpt",
//!   "value": ...}]}` (`<image>` read as `<image_placeholder>`);
//! - pure text: `{"text": ...}`;
//! - text-to-image: `{"image": ..., "caption": ...}`.
//!
//! A line that does not parse is a bad sample: reported with its file and line, counted,
//! and skipped; a missing or unreadable file is an error.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::processor::{Role, IMAGE_PLACEHOLDER};

/// The three kinds of training data, in ratio order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Image(s) + conversation, answers supervised.
    Understanding,
    /// Plain text, every token supervised.
    Text,
    /// Caption + image, the image's codes supervised.
    T2i,
}

impl Kind {
    /// The three kinds in ratio order (U:T:G).
    pub const ALL: [Kind; 3] = [Kind::Understanding, Kind::Text, Kind::T2i];

    /// The manifest key and metrics suffix.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Understanding => "understanding",
            Kind::Text => "text",
            Kind::T2i => "t2i",
        }
    }

    /// Position in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One training record, paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Images and a conversation ending with an assistant answer.
    Understanding {
        /// Image files in placeholder order.
        images: Vec<PathBuf>,
        /// (role, content) turns.
        messages: Vec<(Role, String)>,
    },
    /// A document.
    Text {
        /// Its text.
        text: String,
    },
    /// An image and its caption.
    T2i {
        /// The image file.
        image: PathBuf,
        /// The caption.
        caption: String,
    },
}

impl Record {
    /// The kind of data this record is.
    pub fn kind(&self) -> Kind {
        match self {
            Record::Understanding { .. } => Kind::Understanding,
            Record::Text { .. } => Kind::Text,
            Record::T2i { .. } => Kind::T2i,
        }
    }
}

/// A record with where it came from (for warnings).
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The record.
    pub record: Record,
    /// Its JSONL file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Located {
    /// `file:line`, for messages.
    pub fn origin(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// Every record of a manifest, by kind, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// The manifest file.
    pub manifest: PathBuf,
    /// Records per kind (index = [`Kind::index`]).
    pub kinds: [Vec<Located>; 3],
    /// The text-to-image set that replaces `kinds[2]` from a step on: (step if the
    /// manifest gives it, records).
    pub t2i_after: Option<(Option<u64>, Vec<Located>)>,
    /// One message per skipped line.
    pub bad: Vec<String>,
}

impl Dataset {
    /// Reads a manifest and every JSONL file it names.
    pub fn load(manifest: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!("{}: not a valid manifest: {e}", manifest.display()))
        })?;
        let Value::Object(map) = value else {
            return Err(Error::InvalidInput(format!(
                "{}: a manifest is a JSON object with keys understanding, text, t2i, t2i_after",
                manifest.display()
            )));
        };
        let base = manifest.parent().unwrap_or(Path::new("."));
        let mut data = Dataset {
            manifest: manifest.to_path_buf(),
            ..Default::default()
        };
        for (key, v) in &map {
            let files = |v: &Value| file_list(manifest, key, v);
            match key.as_str() {
                "t2i_after" => {
                    let step = v.get("step").and_then(Value::as_u64);
                    let list = v.get("files").ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "{}: t2i_after needs \"files\" (and optionally \"step\")",
                            manifest.display()
                        ))
                    })?;
                    let mut recs = Vec::new();
                    for f in files(list)? {
                        recs.extend(read_jsonl(&base.join(f), Kind::T2i, &mut data.bad)?);
                    }
                    data.t2i_after = Some((step, recs));
                }
                k => {
                    let kind = Kind::ALL
                        .into_iter()
                        .find(|x| x.key() == k)
                        .ok_or_else(|| {
                            Error::InvalidInput(format!(
                            "{}: unknown key {k:?}; keys are understanding, text, t2i, t2i_after",
                            manifest.display()
                        ))
                        })?;
                    for f in files(v)? {
                        let recs = read_jsonl(&base.join(f), kind, &mut data.bad)?;
                        data.kinds[kind.index()].extend(recs);
                    }
                }
            }
        }
        Ok(data)
    }

    /// Records of one kind.
    pub fn of(&self, kind: Kind) -> &[Located] {
        &self.kinds[kind.index()]
    }
}

fn file_list(manifest: &Path, key: &str, v: &Value) -> Result<Vec<String>> {
    let bad = || {
        Error::InvalidInput(format!(
            "{}: {key} must be a list of JSONL file names",
            manifest.display()
        ))
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|f| f.as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

/// Reads one JSONL file of `kind`; unparsable lines go to `bad`.
pub fn read_jsonl(path: &Path, kind: Kind, bad: &mut Vec<String>) -> Result<Vec<Located>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{}:{}", path.display(), i + 1);
        match parse_record(line, kind, dir) {
            Ok(record) => out.push(Located {
                record,
                file: path.to_path_buf(),
                line: i + 1,
            }),
            Err(e) => bad.push(format!("{origin}: {e}")),
        }
    }
    Ok(out)
}

/// Parses one line as a record of `kind`, resolving paths against `dir`.
pub fn parse_record(line: &str, kind: Kind, dir: &Path) -> std::result::Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let str_field = |key: &str| -> std::result::Result<String, String> {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{} sample needs a string {key:?}", kind.key()))
    };
    match kind {
        Kind::Text => Ok(Record::Text {
            text: str_field("text")?,
        }),
        Kind::T2i => Ok(Record::T2i {
            image: dir.join(str_field("image")?),
            caption: str_field("caption")?,
        }),
        Kind::Understanding => parse_understanding(&v, dir),
    }
}

fn parse_understanding(v: &Value, dir: &Path) -> std::result::Result<Record, String> {
    let images: Vec<PathBuf> = match v.get("images").or_else(|| v.get("image")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![dir.join(s)],
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(|s| dir.join(s)))
            .collect::<Option<_>>()
            .ok_or("\"images\" must be a list of file names")?,
        Some(_) => return Err("\"images\" must be a list of file names".into()),
    };
    let (turns, role_key, content_key, llava) =
        match (v.get("conversation"), v.get("conversations")) {
            (Some(c), _) => (c, "role", "content", false),
            (None, Some(c)) => (c, "from", "value", true),
            (None, None) => {
                return Err(
                    "understanding sample needs \"conversation\" (or LLaVA's \"conversations\")"
                        .into(),
                )
            }
        };
    let turns = turns
        .as_array()
        .ok_or("the conversation must be a list of turns")?;
    let mut messages = Vec::with_capacity(turns.len());
    for (i, t) in turns.iter().enumerate() {
        let role = t.get(role_key).and_then(Value::as_str).unwrap_or("");
        let content = t
            .get(content_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("turn {i} has no string {content_key:?}"))?;
        let role = match role {
            "user" | "human" => Role::User,
            "assistant" | "gpt" => Role::Assistant,
            r => {
                return Err(format!(
                    "turn {i} has role {r:?}; expected user/assistant (human/gpt)"
                ))
            }
        };
        let content = if llava {
            content.replace("<image>", IMAGE_PLACEHOLDER)
        } else {
            content.to_string()
        };
        messages.push((role, content));
    }
    for (i, (role, _)) in messages.iter().enumerate() {
        let want = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        if *role != want {
            return Err(format!(
                "turn {i} is {role:?}; turns must alternate user, assistant, starting with user"
            ));
        }
    }
    if messages.last().map(|(r, _)| *r) != Some(Role::Assistant) {
        return Err("the conversation must end with an assistant answer (nothing to learn)".into());
    }
    Ok(Record::Understanding { images, messages })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_every_form_parse() {
        let d = Path::new("/data");
        let r = parse_record(
            r#"{"images": ["a.jpg"], "conversation": [{"role": "user", "content": "<image_placeholder>\nWhat?"}, {"role": "assistant", "content": "A cat."}]}"#,
            Kind::Understanding,
            d,
        )
        .unwrap();
        let Record::Understanding { images, messages } = r else {
            panic!()
        };
        assert_eq!(images, [PathBuf::from("/data/a.jpg")]);
        assert_eq!(messages[1], (Role::Assistant, "A cat.".to_string()));
        let r = parse_record(
            r#"{"image": "b.png", "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yes"}]}"#,
            Kind::Understanding,
            d,
        )
        .unwrap();
        let Record::Understanding { images, messages } = r else {
            panic!()
        };
        assert_eq!(images, [PathBuf::from("/data/b.png")]);
        assert_eq!(messages[0].1, "<image_placeholder>\nHi");
        assert_eq!(
            parse_record(r#"{"text": "x"}"#, Kind::Text, d).unwrap(),
            Record::Text { text: "x".into() }
        );
        assert_eq!(
            parse_record(r#"{"image": "c.png", "caption": "c"}"#, Kind::T2i, d).unwrap(),
            Record::T2i {
                image: "/data/c.png".into(),
                caption: "c".into()
            }
        );
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let d = Path::new(".");
        let cases = [
            ("{\"text\": ", Kind::Text, "malformed JSON"),
            ("{\"txt\": \"a\"}", Kind::Text, "\"text\""),
            ("{\"image\": \"a\"}", Kind::T2i, "\"caption\""),
            (
                r#"{"conversation": [{"role": "user", "content": "q"}]}"#,
                Kind::Understanding,
                "end with an assistant",
            ),
            (
                r#"{"conversation": [{"role": "bot", "content": "q"}]}"#,
                Kind::Understanding,
                "role \"bot\"",
            ),
            (
                r#"{"conversation": [{"role": "assistant", "content": "q"}]}"#,
                Kind::Understanding,
                "alternate",
            ),
            (
                r#"{"images": 3, "conversation": []}"#,
                Kind::Understanding,
                "list of file names",
            ),
        ];
        for (line, kind, want) in cases {
            let e = parse_record(line, kind, d).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn manifests_load_relative_paths_and_count_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(
            p.join("sub/t.jsonl"),
            "{\"text\": \"a\"}\n\nnot json\n{\"text\": \"b\"}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("sub/g.jsonl"),
            "{\"image\": \"x.png\", \"caption\": \"c\"}\n",
        )
        .unwrap();
        std::fs::write(
            p.join("m.json"),
            r#"{"text": ["sub/t.jsonl"], "t2i_after": {"step": 5, "files": ["sub/g.jsonl"]}}"#,
        )
        .unwrap();
        let d = Dataset::load(&p.join("m.json")).unwrap();
        assert_eq!(d.of(Kind::Text).len(), 2);
        assert_eq!(d.of(Kind::Text)[1].line, 4);
        assert_eq!(d.bad.len(), 1);
        assert!(
            d.bad[0].contains("t.jsonl:3: malformed JSON"),
            "{:?}",
            d.bad
        );
        let (step, recs) = d.t2i_after.unwrap();
        assert_eq!(step, Some(5));
        assert_eq!(
            recs[0].record,
            Record::T2i {
                image: p.join("sub/x.png"),
                caption: "c".into()
            }
        );

        std::fs::write(p.join("bad.json"), r#"{"txt": ["sub/t.jsonl"]}"#).unwrap();
        let e = Dataset::load(&p.join("bad.json")).unwrap_err().to_string();
        assert!(e.contains("unknown key \"txt\""), "{e}");
        std::fs::write(p.join("missing.json"), r#"{"text": ["nope.jsonl"]}"#).unwrap();
        let e = Dataset::load(&p.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.jsonl"), "{e}");
    }
}
