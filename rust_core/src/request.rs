//! Peek the few top-level fields the gateway decides on from a request body,
//! and rewrite `model` / `stream_options` while leaving every other byte as
//! the client sent it.

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::errors::CoreError;

/// Deserialize a member as its raw text, keeping `null` distinguishable from
/// an absent member (plain `Option<&RawValue>` maps `null` to `None`).
pub(crate) fn raw_some<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: Deserializer<'de>,
{
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default, deserialize_with = "raw_some")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_some")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_some")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    /// The Responses API's name for it.
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

/// A byte range inside the body.
type Span = (usize, usize);

/// What the gateway needs from a request body, plus where to rewrite it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The `model` member, if present and a string.
    pub model: Option<String>,
    /// `stream: true` was set.
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`, else `max_output_tokens`.
    pub max_tokens: Option<u64>,
    model_span: Option<Span>,
    stream_options_span: Option<Span>,
    /// Index of the closing `}` of the top-level object.
    close_brace: usize,
    /// The top-level object has no members.
    empty_object: bool,
}

fn span_of(body: &[u8], raw: &RawValue) -> Span {
    // RawValue borrows from `body`, so its offset is a pointer difference.
    let start = (raw.get().as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    (start, start + raw.get().len())
}

/// Parse the top level of a request body. The whole body is validated as
/// JSON; only the members named in [`Peek`] are looked at.
pub fn peek(body: &[u8]) -> Result<RequestInfo, CoreError> {
    let trimmed_end = body
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .ok_or_else(|| {
            CoreError::InvalidBody("request body is empty; expected a JSON object".to_owned())
        })?;
    if body.get(trimmed_end) != Some(&b'}') {
        return Err(CoreError::InvalidBody(
            "request body must be a JSON object".to_owned(),
        ));
    }
    let p: Peek<'_> = serde_json::from_slice(body).map_err(|e| {
        CoreError::InvalidBody(if e.is_data() {
            format!("request body has an invalid field: {e}")
        } else {
            format!("request body is not valid JSON: {e}")
        })
    })?;
    let (model, model_span) = match p.model {
        None => (None, None),
        Some(raw) => match serde_json::from_str::<Option<String>>(raw.get()) {
            Ok(m) => (m, Some(span_of(body, raw))),
            Err(_) => {
                return Err(CoreError::InvalidBody(
                    "'model' must be a string".to_owned(),
                ));
            }
        },
    };
    let stream = match p.stream {
        None => false,
        Some(raw) => match raw.get() {
            "true" => true,
            "false" | "null" => false,
            _ => {
                return Err(CoreError::InvalidBody(
                    "'stream' must be a boolean".to_owned(),
                ));
            }
        },
    };
    // `stream_options` the splice in `rewrite` cannot add usage to would
    // leave a stream without the usage its cost is read from: refuse it
    // here, as the provider would. Both kinds were found by fuzzing: a value
    // that is not an object, and an object with a lone surrogate escape in a
    // key, which cannot be re-encoded.
    let include_usage = match p.stream_options.map(RawValue::get) {
        None | Some("null") => false,
        Some(text) => match serde_json::from_str::<serde_json::Map<String, Value>>(text) {
            Ok(o) => o.get("include_usage") == Some(&Value::Bool(true)),
            Err(_) => {
                return Err(CoreError::InvalidBody(if text.starts_with('{') {
                    "'stream_options' is not a valid JSON object".to_owned()
                } else {
                    "'stream_options' must be an object".to_owned()
                }));
            }
        },
    };
    let open = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let empty_object = body
        .get(open + 1..trimmed_end)
        .is_some_and(|inner| inner.iter().all(u8::is_ascii_whitespace));
    Ok(RequestInfo {
        model,
        stream,
        include_usage,
        max_tokens: p
            .max_completion_tokens
            .or(p.max_tokens)
            .or(p.max_output_tokens),
        model_span,
        stream_options_span: p.stream_options.map(|raw| span_of(body, raw)),
        close_brace: trimmed_end,
        empty_object,
    })
}

/// Rewrite a body: set `model` to `new_model` and/or ask the provider for
/// streamed usage. Returns `None` when nothing needed to change.
pub fn rewrite(
    body: &[u8],
    info: &RequestInfo,
    new_model: Option<&str>,
    inject_usage: bool,
) -> Option<Vec<u8>> {
    // Edits are (span to replace, replacement), applied back to front.
    let mut edits: Vec<(Span, Vec<u8>)> = Vec::with_capacity(2);
    if let (Some(m), Some(span)) = (new_model, info.model_span) {
        if info.model.as_deref() != Some(m) {
            edits.push((span, serde_json::to_vec(m).unwrap_or_default()));
        }
    }
    if inject_usage && info.stream && !info.include_usage {
        match info.stream_options_span {
            None => {
                let sep: &[u8] = if info.empty_object { b"" } else { b"," };
                let mut ins = sep.to_vec();
                ins.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
                edits.push(((info.close_brace, info.close_brace), ins));
            }
            Some(span) => {
                let raw = body.get(span.0..span.1).unwrap_or_default();
                let parsed: Result<Option<serde_json::Map<String, Value>>, _> =
                    serde_json::from_slice(raw);
                // `peek` refused every other value, so this always parses.
                if let Ok(obj) = parsed {
                    let mut obj = obj.unwrap_or_default();
                    obj.insert("include_usage".to_owned(), Value::Bool(true));
                    if let Ok(bytes) = serde_json::to_vec(&obj) {
                        edits.push((span, bytes));
                    }
                }
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_by_key(|(span, _)| std::cmp::Reverse(span.0));
    let mut out = body.to_vec();
    for ((start, end), with) in edits {
        out.splice(start..end, with);
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn peeks_fields_without_touching_messages() {
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi \"model\": x"}],"stream":true,"max_tokens":50}"#;
        let info = peek(body).unwrap();
        assert_eq!(info.model.as_deref(), Some("gpt-4o-mini"));
        assert!(info.stream);
        assert!(!info.include_usage);
        assert_eq!(info.max_tokens, Some(50));
    }

    #[test]
    fn reads_the_output_cap_of_every_protocol() {
        let r = br#"{"model":"gpt-5","input":"hi","max_output_tokens":77}"#;
        assert_eq!(peek(r).unwrap().max_tokens, Some(77));
        let m = br#"{"model":"claude-x","max_tokens":12,"messages":[]}"#;
        assert_eq!(peek(m).unwrap().max_tokens, Some(12));
    }

    #[test]
    fn rejects_non_objects_and_bad_types() {
        assert!(peek(b"").is_err());
        assert!(peek(b"[1,2]").is_err());
        assert!(peek(b"{\"model\":").is_err());
        assert!(
            peek(br#"{"model":5}"#)
                .unwrap_err()
                .message()
                .contains("model")
        );
        assert!(
            peek(br#"{"model":"x","stream":"yes"}"#)
                .unwrap_err()
                .message()
                .contains("stream")
        );
        assert!(peek(br#"{"model":"x","model":"y"}"#).is_err());
        // Fuzzing found this one: a lone surrogate in a key of stream_options
        // peeked fine, then the usage splice could not re-encode the object.
        let lone = br#"{"model":"m","stream":true,"stream_options":{"\udddd":1}}"#;
        assert!(peek(lone).unwrap_err().message().contains("stream_options"));
        // And this one: a stream_options that is not an object went upstream
        // unchanged, so the stream would have come back without usage.
        for other in ["1", "[]", "\"x\"", "true"] {
            let body = format!(r#"{{"model":"m","stream":true,"stream_options":{other}}}"#);
            let err = peek(body.as_bytes()).unwrap_err();
            assert!(err.message().contains("must be an object"), "{other}");
        }
        let null = br#"{"model":"m","stream":true,"stream_options":null}"#;
        let info = peek(null).unwrap();
        let out = rewrite(null, &info, None, true).unwrap();
        assert_eq!(
            out,
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn rewrites_model_only() {
        let body = br#"{ "messages": [], "model" : "gpt-4o", "temperature": 0.5 }"#;
        let info = peek(body).unwrap();
        let out = rewrite(body, &info, Some("gpt-4o-mini"), false).unwrap();
        assert_eq!(
            out,
            br#"{ "messages": [], "model" : "gpt-4o-mini", "temperature": 0.5 }"#
        );
        assert!(rewrite(body, &info, Some("gpt-4o"), false).is_none());
    }

    #[test]
    fn injects_usage_when_absent() {
        let body = b"{\"model\":\"m\",\"stream\":true}\n";
        let info = peek(body).unwrap();
        let out = rewrite(body, &info, None, true).unwrap();
        assert_eq!(
            out,
            b"{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}\n"
        );
    }

    #[test]
    fn injects_usage_into_existing_options() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"n":1}"#;
        let info = peek(body).unwrap();
        let out = rewrite(body, &info, Some("m2"), true).unwrap();
        assert_eq!(
            out,
            br#"{"model":"m2","stream":true,"stream_options":{"include_usage":true},"n":1}"#
        );
    }

    #[test]
    fn leaves_client_requested_usage_alone() {
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        let info = peek(body).unwrap();
        assert!(info.include_usage);
        assert!(rewrite(body, &info, None, true).is_none());
        // A repeated member reads as its last value, as the provider reads it.
        let twice = br#"{"model":"m","stream":true,"stream_options":{"include_usage":false,"include_usage":true}}"#;
        assert!(peek(twice).unwrap().include_usage);
    }

    #[test]
    fn no_injection_without_stream() {
        let body = br#"{"model":"m"}"#;
        let info = peek(body).unwrap();
        assert!(rewrite(body, &info, None, true).is_none());
    }
}
