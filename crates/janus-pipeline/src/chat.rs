//! The "deepseek" SFT chat format of the reference, in both role styles.

use std::path::Path;

use serde::Deserialize;

use crate::{PipelineError, Result};

/// The system prompt every understanding prompt of the reference carries.
pub const SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";

/// The key of `processor_config.json` where `janus convert` records the
/// template of the checkpoint it read, so a converted copy keeps it whatever
/// its directory is called (an extension key; the reference ignores it).
pub const TEMPLATE_KEY: &str = "janus_template";

/// Separator after an assistant turn (the template's `sep2`).
const SEP2: &str = "<｜end▁of▁sentence｜>";

/// Role strings written into the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// Janus-1.3B: `User` / `Assistant`.
    Janus,
    /// Janus-Pro: `<|User|>` / `<|Assistant|>` (single special tokens).
    Pro,
}

impl Template {
    /// `(user, assistant)` role strings.
    pub fn roles(self) -> (&'static str, &'static str) {
        match self {
            Self::Janus => ("User", "Assistant"),
            Self::Pro => ("<|User|>", "<|Assistant|>"),
        }
    }

    /// The name [`Template`]'s `FromStr` reads back (`janus`, `pro`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Janus => "janus",
            Self::Pro => "pro",
        }
    }

    /// The template recorded under [`TEMPLATE_KEY`] in `dir/processor_config.json`
    /// (by `janus convert`), if any.
    pub fn recorded(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("processor_config.json");
        let Some(json) = crate::tokenizer::read_json(&path)? else {
            return Ok(None);
        };
        match json.get(TEMPLATE_KEY) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .ok_or_else(|| {
                    PipelineError::Invalid(format!(
                        "`{TEMPLATE_KEY}` in {} is not a string",
                        path.display()
                    ))
                })?
                .parse()
                .map(Some),
        }
    }

    /// The template of the checkpoint in `dir` (`name`: the model id or path
    /// the user gave): the one [`Template::recorded`] there, else
    /// [`Template::for_model`] of the name and the resolved directory.
    pub fn of_checkpoint(dir: &Path, name: &str, has_pro_roles: bool) -> Result<Self> {
        if let Some(t) = Self::recorded(dir)? {
            return Ok(t);
        }
        let full = format!(
            "{name} {}",
            dir.canonicalize().unwrap_or(dir.to_path_buf()).display()
        );
        Ok(Self::for_model(&full, has_pro_roles))
    }

    /// The template a checkpoint's examples use: Janus-1.3B style when the directory
    /// or model id names Janus-1.3B (or the tokenizer lacks `<|User|>`), Pro otherwise.
    pub fn for_model(name: &str, has_pro_roles: bool) -> Self {
        let lower = name.to_ascii_lowercase();
        if !has_pro_roles || (lower.contains("janus-1.3b") || lower.contains("janus_1_3b")) {
            Self::Janus
        } else {
            Self::Pro
        }
    }
}

impl std::str::FromStr for Template {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "janus" | "janus-1.3b" | "1.3b" => Ok(Self::Janus),
            "pro" | "janus-pro" => Ok(Self::Pro),
            other => Err(PipelineError::Invalid(format!(
                "unknown template `{other}` (expected `janus` or `pro`)"
            ))),
        }
    }
}

/// One chat message in the reference's format. A conversation file with any
/// other field is refused (a misspelt `images` would drop its images).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Role string as written into the prompt (`user`/`assistant` are mapped to the
    /// template's role strings).
    pub role: String,
    /// Text, with `<image_placeholder>` where images go.
    #[serde(default)]
    pub content: String,
    /// Image files of this message, in placeholder order.
    #[serde(default)]
    pub images: Vec<String>,
}

impl Message {
    /// A message with no images.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            images: Vec::new(),
        }
    }
}

/// The largest conversation file read, in bytes (its images are files of
/// their own).
const MAX_CONVERSATION_BYTES: u64 = 16 << 20;

/// Reads a JSON list of messages (`role`, `content`, `images`) from a regular
/// file of at most 16 MiB (a byte-order mark is skipped).
pub fn read_conversation(path: impl AsRef<Path>) -> Result<Vec<Message>> {
    let path = path.as_ref();
    // Checked before opening: a FIFO would wait for a writer, /dev/zero
    // never end.
    let meta = std::fs::metadata(path).map_err(|e| janus_core::Error::io(path, e))?;
    if !meta.is_file() {
        return Err(PipelineError::Prompt(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_CONVERSATION_BYTES {
        return Err(PipelineError::Prompt(format!(
            "{} is {} bytes: a conversation file holds at most {MAX_CONVERSATION_BYTES}",
            path.display(),
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| janus_core::Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let messages: Vec<Message> = serde_json::from_str(text).map_err(|e| {
        PipelineError::Prompt(format!(
            "{}: expected a JSON list of {{\"role\", \"content\", \"images\"}} messages: {e}",
            path.display()
        ))
    })?;
    if messages.is_empty() {
        return Err(PipelineError::Prompt(format!(
            "{}: the conversation is empty",
            path.display()
        )));
    }
    Ok(messages)
}

/// Maps generic `user`/`assistant` roles to the template's strings; other roles
/// are kept verbatim, as the reference does.
pub fn apply_roles(messages: &[Message], template: Template) -> Vec<Message> {
    let (user, assistant) = template.roles();
    messages
        .iter()
        .map(|m| {
            let role = match m.role.to_ascii_lowercase().as_str() {
                "user" | "<|user|>" => user.to_string(),
                "assistant" | "<|assistant|>" => assistant.to_string(),
                _ => m.role.clone(),
            };
            Message { role, ..m.clone() }
        })
        .collect()
}

/// The reference's `get_prompt` for the "deepseek" style: optional system prompt,
/// then `Role: content` turns (stripped), EOS after each `assistant` turn and
/// `\n\n` after each `user` one, `Role:` for an empty turn, and the whole
/// string stripped. `roles`: the template's `(user, assistant)`.
///
/// (The reference picks the separator by position, `\n\n` after even turns and
/// EOS after odd ones: the same for the conversations it is written for, which
/// alternate from a user turn. By role, a conversation that opens with the
/// assistant's greeting or holds two user turns in a row still ends each user
/// turn as the model was trained to see it, not with an end of sentence. A
/// conversation with other roles, kept verbatim, goes by position as in the
/// reference.)
pub fn sft_format(messages: &[Message], system_prompt: &str, roles: (&str, &str)) -> String {
    let (user, assistant) = roles;
    let by_role = messages
        .iter()
        .all(|m| m.role == user || m.role == assistant);
    let mut out = String::new();
    if !system_prompt.is_empty() {
        out.push_str(system_prompt);
        out.push_str("\n\n");
    }
    for (i, m) in messages.iter().enumerate() {
        let content = m.content.trim();
        out.push_str(&m.role);
        if content.is_empty() {
            out.push(':');
        } else {
            out.push_str(": ");
            out.push_str(content);
            let ends_a_reply = if by_role {
                m.role == assistant
            } else {
                i % 2 == 1
            };
            out.push_str(if ends_a_reply { SEP2 } else { "\n\n" });
        }
    }
    out.trim().to_string()
}

/// Whether `role` is a system role (`system`, or OpenAI's `developer`, in
/// any case).
pub fn is_system_role(role: &str) -> bool {
    role.eq_ignore_ascii_case("system") || role.eq_ignore_ascii_case("developer")
}

/// Takes the system messages ([`is_system_role`]) out of `messages` and
/// returns their texts joined by a blank line, or `None` when they hold no
/// text (then the reference's [`SYSTEM_PROMPT`] applies: an app that always
/// sends its system field, empty by default, keeps the prompt the model was
/// trained with).
pub fn take_system(messages: &mut Vec<Message>) -> Option<String> {
    let mut system = Vec::new();
    messages.retain(|m| {
        if !is_system_role(&m.role) {
            return true;
        }
        let text = m.content.trim();
        if !text.is_empty() {
            system.push(text.to_string());
        }
        false
    });
    (!system.is_empty()).then(|| system.join("\n\n"))
}

/// Understanding prompt: system prompt + the conversation, ending with an empty
/// assistant turn (appended if the last message is not one).
pub fn understanding_prompt(messages: &[Message], template: Template) -> String {
    understanding_prompt_with(messages, template, SYSTEM_PROMPT)
}

/// [`understanding_prompt`] with another system prompt (empty: none).
pub fn understanding_prompt_with(messages: &[Message], template: Template, system: &str) -> String {
    let mut msgs = apply_roles(messages, template);
    let (_, assistant) = template.roles();
    if msgs
        .last()
        .is_none_or(|m| m.role != assistant || !m.content.trim().is_empty())
    {
        msgs.push(Message::new(assistant, ""));
    }
    sft_format(&msgs, system, template.roles())
}

/// Image-generation prompt: no system prompt, `User: PROMPT`, empty assistant turn,
/// then the literal image-start tag.
pub fn generation_prompt(prompt: &str, template: Template, boi_tag: &str) -> String {
    let (user, assistant) = template.roles();
    let msgs = [Message::new(user, prompt), Message::new(assistant, "")];
    format!("{}{boi_tag}", sft_format(&msgs, "", template.roles()))
}

/// Puts one placeholder (and a newline) per image in front of a question that has
/// none; otherwise checks that the placeholder count matches the image count.
pub fn place_images(question: &str, n_images: usize, image_tag: &str) -> Result<String> {
    let found = question.matches(image_tag).count();
    if found == 0 {
        return Ok(format!(
            "{}{question}",
            format!("{image_tag}\n").repeat(n_images)
        ));
    }
    if found != n_images {
        return Err(PipelineError::Prompt(format!(
            "the prompt has {found} `{image_tag}` placeholder(s) but {n_images} image(s) were given"
        )));
    }
    Ok(question.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_end_by_role_not_by_position() {
        // A greeting first, then two user turns in a row: every user turn
        // ends with a blank line, every assistant turn with EOS (by position
        // the question before the answer would end with EOS).
        let messages = [
            Message::new("assistant", "Hi! How can I help?"),
            Message::new("user", "Name a colour."),
            Message::new("user", "A warm one."),
        ];
        let pro = understanding_prompt_with(&messages, Template::Pro, "");
        assert_eq!(
            pro,
            "<|Assistant|>: Hi! How can I help?<｜end▁of▁sentence｜><|User|>: Name a colour.\n\n\
             <|User|>: A warm one.\n\n<|Assistant|>:"
        );
        let janus = understanding_prompt_with(&messages[1..], Template::Janus, "Be brief.");
        assert_eq!(
            janus,
            "Be brief.\n\nUser: Name a colour.\n\nUser: A warm one.\n\nAssistant:"
        );
        // Alternating from a user turn: the reference's positional rule.
        let alternating = [
            Message::new("user", "a"),
            Message::new("assistant", "b"),
            Message::new("user", "c"),
        ];
        assert_eq!(
            understanding_prompt_with(&alternating, Template::Janus, ""),
            "User: a\n\nAssistant: b<｜end▁of▁sentence｜>User: c\n\nAssistant:"
        );
        // Other roles (kept verbatim): by position, as the reference.
        let custom = [Message::new("Bot", "Hi."), Message::new("user", "a")];
        assert_eq!(
            understanding_prompt_with(&custom, Template::Janus, ""),
            "Bot: Hi.\n\nUser: a<｜end▁of▁sentence｜>Assistant:"
        );
    }

    #[test]
    fn system_messages_become_the_system_prompt_unless_empty() {
        let mut messages = vec![
            Message::new("System", "Be brief."),
            Message::new("user", "a"),
            Message::new("developer", "  Answer in French. "),
            Message::new("assistant", "b"),
        ];
        assert_eq!(
            take_system(&mut messages).as_deref(),
            Some("Be brief.\n\nAnswer in French.")
        );
        assert_eq!(
            messages,
            [Message::new("user", "a"), Message::new("assistant", "b")]
        );
        // Empty system fields (apps send them by default): the built-in one.
        let mut messages = vec![Message::new("system", " "), Message::new("user", "a")];
        assert_eq!(take_system(&mut messages), None);
        assert_eq!(messages, [Message::new("user", "a")]);
    }
}
