//! Chat messages to the pipeline's conversation: text parts concatenated in
//! order with the image placeholder at each image part, system messages as
//! the system prompt; images decoded from `data:` URLs in a second step
//! ([`decode_images`]), once the prompt is known to fit the model.

use base64::Engine;
use janus_pipeline::chat::Message;
use janus_pipeline::{ImageProcessor, RgbImage};
use serde_json::Value;

use crate::config::Limits;
use crate::error::{ApiError, excerpt};
use crate::openai::ChatMessage;

/// A conversation ready for [`janus_pipeline::Request`].
#[derive(Debug)]
pub struct Conversation {
    /// User and assistant turns.
    pub messages: Vec<Message>,
    /// Images in placeholder order, not yet decoded.
    pub images: Vec<ImageUrl>,
    /// The system messages joined, if any.
    pub system_prompt: Option<String>,
}

/// An image part's `data:` URL (its scheme and encoding checked) and where it
/// stands in the request.
#[derive(Debug)]
pub struct ImageUrl {
    /// The URL.
    pub url: String,
    /// Its field, as errors name it (`messages[1].content[2].image_url`).
    pub field: String,
}

/// Converts `messages`; `image_tag` is the model's placeholder. The images
/// are counted and their URLs checked, not decoded: see [`decode_images`].
pub fn conversation(
    messages: Vec<ChatMessage>,
    image_tag: &str,
    limits: &Limits,
) -> Result<Conversation, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages".into()),
            "`messages` must hold at least one message",
        ));
    }
    let mut out = Conversation {
        messages: Vec::new(),
        images: Vec::new(),
        system_prompt: None,
    };
    for (i, m) in messages.into_iter().enumerate() {
        let at = format!("messages[{i}]");
        let text = content_text(m.content, &at, image_tag, limits, &mut out.images)?;
        match m.role.as_str() {
            "system" | "developer" => {
                if text.contains(image_tag) {
                    return Err(ApiError::invalid(
                        Some(format!("{at}.content")),
                        format!("`{at}`: a {} message cannot hold images", m.role),
                    ));
                }
                out.messages.push(Message::new(m.role, text));
            }
            "user" | "assistant" => out.messages.push(Message::new(m.role, text)),
            other => {
                return Err(ApiError::invalid(
                    Some(format!("{at}.role")),
                    format!(
                        "`{at}.role`: `{}` is not supported (system, developer, user, assistant)",
                        excerpt(other)
                    ),
                ));
            }
        }
    }
    // Joined into the system prompt; empty ones leave the built-in prompt.
    out.system_prompt = janus_pipeline::chat::take_system(&mut out.messages);
    if !out.messages.iter().any(|m| m.role == "user") {
        return Err(ApiError::invalid(
            Some("messages".into()),
            "`messages` needs at least one user message",
        ));
    }
    let placeholders: usize = out
        .messages
        .iter()
        .map(|m| m.content.matches(image_tag).count())
        .sum();
    if placeholders != out.images.len() {
        return Err(ApiError::invalid(
            Some("messages".into()),
            format!(
                "the messages hold {placeholders} `{image_tag}` placeholder(s) but {} image(s)",
                out.images.len()
            ),
        ));
    }
    Ok(out)
}

/// Decodes the images of a [`Conversation`]. With `fit`, each image is
/// brought to the encoder's input size as soon as it is decoded (the model's
/// preprocessing leaves such an image as it is), so a request waiting in the
/// queue holds small images, not full-size ones.
pub fn decode_images(
    urls: Vec<ImageUrl>,
    limits: &Limits,
    fit: Option<&ImageProcessor>,
) -> Result<Vec<RgbImage>, ApiError> {
    urls.into_iter()
        .map(|u| {
            let image = image_from_url(&u.url, &u.field, limits.max_image_pixels)?;
            Ok(match fit {
                Some(p) => p.resize_and_pad(&image),
                None => image,
            })
        })
        .collect()
}

/// The pixels the images' headers declare in all, read from the start of
/// each data URL (no image is decoded; metadata bounded as by
/// [`janus_pipeline::declared_size`]); `None` where one cannot be read that
/// way (its decoding then tells why).
pub fn declared_pixels(urls: &[ImageUrl]) -> Option<u64> {
    // 64 KiB of image: past a JPEG's usual metadata to its frame header.
    const HEAD_CHARS: usize = 4 * (64 << 10) / 3;
    let mut total = 0u64;
    for u in urls {
        let data = data_url_payload(&u.url, &u.field).ok()?;
        let head: String = data
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .take(HEAD_CHARS)
            .collect();
        // (Base64 is ASCII: anything else is no image, and cutting by bytes
        // must stay on a character boundary.)
        if !head.is_ascii() {
            return None;
        }
        let head = &head[..head.len() / 4 * 4];
        let bytes = lenient_base64().decode(head.trim_end_matches('=')).ok()?;
        let (w, h) = janus_pipeline::declared_size(&bytes)?;
        total = total.saturating_add(w.saturating_mul(h));
    }
    Some(total)
}

/// The text of one message's `content`, placeholders where images are; image
/// URLs are appended to `images`.
fn content_text(
    content: Value,
    at: &str,
    image_tag: &str,
    limits: &Limits,
    images: &mut Vec<ImageUrl>,
) -> Result<String, ApiError> {
    let field = format!("{at}.content");
    let parts = match content {
        Value::Null => return Ok(String::new()),
        Value::String(s) => return Ok(s),
        Value::Array(parts) => parts,
        _ => {
            return Err(ApiError::invalid(
                Some(field.clone()),
                format!("`{field}` must be a string or a list of parts"),
            ));
        }
    };
    // Image parts put a placeholder where they stand, unless the text parts
    // already place exactly one per image part themselves.
    let mut text = String::new();
    let mut plain = String::new();
    let mut image_parts = 0;
    for (j, mut part) in parts.into_iter().enumerate() {
        let at = format!("{field}[{j}]");
        let kind = part
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::invalid(
                    Some(format!("{at}.type")),
                    format!("`{at}.type` is missing"),
                )
            })?;
        match kind.as_str() {
            "text" => {
                let t = part.get("text").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid(
                        Some(format!("{at}.text")),
                        format!("`{at}.text` must be a string"),
                    )
                })?;
                text.push_str(t);
                plain.push_str(t);
            }
            "image_url" => {
                let url = part
                    .get_mut("image_url")
                    .and_then(|u| match u {
                        Value::Object(o) => o.get_mut("url"),
                        u => Some(u),
                    })
                    .and_then(|u| match u {
                        Value::String(s) => Some(std::mem::take(s)),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        ApiError::invalid(
                            Some(format!("{at}.image_url.url")),
                            format!("`{at}.image_url.url` must be a string"),
                        )
                    })?;
                if images.len() >= limits.max_images {
                    return Err(ApiError::invalid(
                        Some(at.clone()),
                        format!(
                            "too many images: at most {} per request (--max-images)",
                            limits.max_images
                        ),
                    )
                    .code("too_many_images"));
                }
                let field = format!("{at}.image_url");
                data_url_payload(&url, &field)?;
                images.push(ImageUrl { url, field });
                text.push_str(image_tag);
                image_parts += 1;
            }
            other => {
                return Err(ApiError::invalid(
                    Some(format!("{at}.type")),
                    format!(
                        "`{at}.type`: `{}` is not supported (text, image_url)",
                        excerpt(other)
                    ),
                ));
            }
        }
    }
    let explicit = plain.matches(image_tag).count();
    match explicit {
        0 => Ok(text),
        n if n == image_parts => Ok(plain),
        _ if image_parts == 0 => Ok(plain),
        n => Err(ApiError::invalid(
            Some(field.clone()),
            format!(
                "`{field}`: the text places {n} `{image_tag}` but the message has {image_parts} image part(s)"
            ),
        )),
    }
}

/// Decodes a `data:image/...;base64,...` URL; remote URLs are refused.
pub fn image_from_url(url: &str, name: &str, max_pixels: u64) -> Result<RgbImage, ApiError> {
    let bad = |msg: String| ApiError::invalid(Some(name.to_string()), msg);
    let data = data_url_payload(url, name)?;
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = lenient_base64()
        .decode(data.as_bytes())
        .map_err(|e| bad(format!("`{name}`: invalid base64: {e}")).code("invalid_base64"))?;
    janus_pipeline::decode_image_within(&bytes, &format!("`{name}`"), max_pixels)
        .map_err(|e| bad(e.to_string()).code("invalid_image"))
}

/// Standard base64, padded or not.
fn lenient_base64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

/// The base64 text of a `data:...;base64,` URL `name`; remote URLs and other
/// schemes are refused.
fn data_url_payload<'a>(url: &'a str, name: &str) -> Result<&'a str, ApiError> {
    let bad = |msg: String| ApiError::invalid(Some(name.to_string()), msg);
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https:/") {
        return Err(bad(format!(
            "`{name}`: remote image URLs are not fetched; send the image inline as a data:image/...;base64 URL"
        ))
        .code("remote_url"));
    }
    let Some(rest) = url
        .get(..5)
        .filter(|scheme| scheme.eq_ignore_ascii_case("data:"))
        .map(|_| &url[5..])
    else {
        return Err(bad(format!(
            "`{name}` must be a data:image/...;base64,... URL"
        )));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(bad(format!("`{name}`: the data URL has no `,`")));
    };
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return Err(bad(format!(
            "`{name}`: the data URL must be base64-encoded"
        )));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: Value) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content,
        }
    }

    fn png_url() -> String {
        let img = RgbImage {
            width: 3,
            height: 2,
            pixels: vec![7; 18],
        };
        let png = janus_pipeline::encode_png(&img).unwrap();
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        )
    }

    #[test]
    fn declared_pixels_are_read_from_the_headers() {
        let url = |w: usize, h: usize| {
            let png = janus_pipeline::encode_png(&RgbImage {
                width: w,
                height: h,
                pixels: vec![7; w * h * 3],
            })
            .unwrap();
            ImageUrl {
                url: format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(png)
                ),
                field: "x".into(),
            }
        };
        assert_eq!(declared_pixels(&[url(10, 20), url(300, 4)]), Some(1400));
        let junk = ImageUrl {
            url: "data:image/png;base64,aGVsbG8=".into(),
            field: "x".into(),
        };
        assert_eq!(declared_pixels(&[url(10, 20), junk]), None);
        // Not base64 (it panicked cutting inside a character).
        let accented = ImageUrl {
            url: "data:image/png;base64,AAA\u{e9}".into(),
            field: "x".into(),
        };
        assert_eq!(declared_pixels(&[accented]), None);
    }

    #[test]
    fn parts_join_in_order_with_a_placeholder_per_image() {
        let url = png_url();
        let parts = serde_json::json!([
            {"type": "text", "text": "Compare "},
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": " and "},
            {"type": "image_url", "image_url": {"url": url}},
        ]);
        let c = conversation(
            vec![
                msg("system", Value::String("Be brief.".into())),
                msg("user", parts),
            ],
            "<image_placeholder>",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            c.messages[0].content,
            "Compare <image_placeholder> and <image_placeholder>"
        );
        assert_eq!(c.images.len(), 2);
        assert_eq!(c.images[1].field, "messages[1].content[3].image_url");
        let images = decode_images(c.images, &Limits::default(), None).unwrap();
        assert_eq!((images[0].width, images[0].height), (3, 2));
        assert_eq!(c.system_prompt.as_deref(), Some("Be brief."));
    }

    #[test]
    fn bad_urls_name_the_field() {
        let limits = Limits::default();
        for (url, code) in [
            ("https://example.com/cat.png", "remote_url"),
            ("data:image/png;base64,@@@", "invalid_base64"),
            ("data:image/png;base64,aGVsbG8=", "invalid_image"),
        ] {
            let e = image_from_url(
                url,
                "messages[0].content[1].image_url",
                limits.max_image_pixels,
            )
            .unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.code, Some(code), "{url}");
            assert!(
                e.message.contains("messages[0].content[1]"),
                "{}",
                e.message
            );
        }
    }
}
