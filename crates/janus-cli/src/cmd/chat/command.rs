//! What one line typed at the chat prompt asks for.

use std::path::PathBuf;

/// One line of chat input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A message to the model.
    Say(String),
    /// `/image PATH`: attach an image to the next message.
    Image(PathBuf),
    /// `/reset`: forget the conversation.
    Reset,
    /// `/save FILE`: write the conversation as JSON.
    Save(PathBuf),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
    /// A blank line: nothing to do.
    Nothing,
}

/// The `/help` text.
pub const HELP: &str = "\
commands:
  /image PATH   attach an image to your next message (repeatable)
  /reset        start a new conversation (drops attached images too)
  /save FILE    write the conversation to FILE as JSON
  /help         this list
  /quit         leave (Ctrl-D too)
Ctrl-C stops an answer; at the prompt, Ctrl-C twice leaves.
A message that starts with / is sent by doubling it: //etc/hosts is \"/etc/hosts\".";

impl Command {
    /// Parses one input line. Errors are one-line messages for the user.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(Command::Nothing);
        }
        if let Some(escaped) = line.strip_prefix("//") {
            return Ok(Command::Say(format!("/{escaped}")));
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Ok(Command::Say(line.to_string()));
        };
        let (name, arg) = match rest.split_once(char::is_whitespace) {
            Some((name, arg)) => (name, arg.trim()),
            None => (rest, ""),
        };
        let no_arg = |cmd: Command| {
            if arg.is_empty() {
                Ok(cmd)
            } else {
                Err(format!("/{name} takes no argument"))
            }
        };
        let path_arg = |usage: &str| {
            if arg.is_empty() {
                Err(format!("usage: {usage}"))
            } else {
                Ok(expand_path(arg))
            }
        };
        match name {
            "image" | "img" => path_arg("/image PATH").map(Command::Image),
            "save" => path_arg("/save FILE").map(Command::Save),
            "reset" | "clear" => no_arg(Command::Reset),
            "help" | "?" => Ok(Command::Help),
            "quit" | "exit" | "q" => no_arg(Command::Quit),
            _ => Err(format!(
                "unknown command /{name} (/help lists them; start a message with // to send a leading /)"
            )),
        }
    }
}

/// A path as typed: surrounding quotes (which terminals add to dragged-in files) are
/// dropped and a leading `~/` is the home directory.
pub fn expand_path(arg: &str) -> PathBuf {
    let mut s = arg.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            s = &s[1..s.len() - 1];
            break;
        }
    }
    if let Some(rest) = s.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_blank_lines() {
        assert_eq!(
            Command::parse("  hi there \n"),
            Ok(Command::Say("hi there".into()))
        );
        assert_eq!(Command::parse("   "), Ok(Command::Nothing));
        assert_eq!(
            Command::parse("//etc/hosts?"),
            Ok(Command::Say("/etc/hosts?".into()))
        );
    }

    #[test]
    fn commands() {
        assert_eq!(
            Command::parse("/image  a b.png "),
            Ok(Command::Image("a b.png".into()))
        );
        assert_eq!(
            Command::parse("/image 'x y.png'"),
            Ok(Command::Image("x y.png".into()))
        );
        assert_eq!(
            Command::parse("/save out.json"),
            Ok(Command::Save("out.json".into()))
        );
        assert_eq!(Command::parse("/reset"), Ok(Command::Reset));
        assert_eq!(Command::parse("/help"), Ok(Command::Help));
        assert_eq!(Command::parse("/quit"), Ok(Command::Quit));
        assert_eq!(Command::parse("/exit"), Ok(Command::Quit));
    }

    #[test]
    fn bad_commands_are_errors() {
        assert!(Command::parse("/image").unwrap_err().contains("usage"));
        assert!(Command::parse("/save  ").unwrap_err().contains("usage"));
        assert!(Command::parse("/reset now").is_err());
        assert!(Command::parse("/frobnicate").unwrap_err().contains("/help"));
    }

    #[test]
    fn home_is_expanded() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(expand_path("~/a.png"), PathBuf::from(home).join("a.png"));
        }
        assert_eq!(expand_path("\"q.png\""), PathBuf::from("q.png"));
        assert_eq!(expand_path("'"), PathBuf::from("'"));
    }
}
