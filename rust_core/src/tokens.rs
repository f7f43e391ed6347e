//! Offline token counting (tiktoken-compatible BPE, o200k / cl100k) for when a
//! provider reports no usage. Counts are estimates and are recorded as such.

use pyo3::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// The BPE table closest to what `model` uses. Models of other vendors get
/// o200k: their tokenizers are unpublished, and the count is marked estimated.
pub fn encoding_for(model: &str) -> &'static CoreBPE {
    const CL100K: &[&str] = &[
        "gpt-4-",
        "gpt-3.5",
        "text-embedding-",
        "davinci-002",
        "babbage-002",
    ];
    if CL100K.iter().any(|p| model.starts_with(p)) || model == "gpt-4" {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

/// Tokens in `text` for `model`.
pub fn count(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoding_for(model).encode_ordinary(text).len() as u64
}

/// Tokens a chat message costs beyond its text (OpenAI's published formula).
const PER_MESSAGE: u64 = 3;
/// Tokens that prime the assistant's reply.
const REPLY_PRIMING: u64 = 3;

/// Append every string found in a message `content` (a string, or a list of
/// parts with `text`), each followed by `sep`.
fn push_content(v: &Value, out: &mut String, sep: &str) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push_str(sep);
        }
        Value::Array(parts) => {
            for p in parts {
                match p {
                    Value::String(s) => {
                        out.push_str(s);
                        out.push_str(sep);
                    }
                    Value::Object(o) => {
                        if let Some(Value::String(t)) = o.get("text") {
                            out.push_str(t);
                            out.push_str(sep);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[derive(Deserialize, Default)]
struct PromptBody {
    #[serde(default)]
    messages: Option<Vec<Value>>,
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    input: Option<Value>,
    /// Anthropic Messages: the system prompt (a string or text blocks).
    #[serde(default)]
    system: Option<Value>,
    /// OpenAI Responses: the system instructions.
    #[serde(default)]
    instructions: Option<Value>,
}

/// Append the text of one Responses input item (`{"role", "content"}`, or
/// a function call's output) or a plain string / part.
fn push_item(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(role)) = o.get("role") {
                out.push_str(role);
                out.push('\n');
            }
            for key in ["content", "text", "output", "arguments"] {
                if let Some(c) = o.get(key) {
                    push_content(c, out, "\n");
                }
            }
        }
        other => push_content(other, out, "\n"),
    }
}

/// Estimated prompt tokens of a chat, completion or embedding request body.
pub fn estimate_prompt(model: &str, body: &[u8]) -> u64 {
    let Ok(b) = serde_json::from_slice::<PromptBody>(body) else {
        return 0;
    };
    let mut text = String::new();
    let mut extra = 0u64;
    if let Some(messages) = &b.messages {
        extra += REPLY_PRIMING;
        for m in messages {
            extra += PER_MESSAGE;
            if let Value::Object(o) = m {
                if let Some(Value::String(role)) = o.get("role") {
                    text.push_str(role);
                    text.push('\n');
                }
                if let Some(Value::String(name)) = o.get("name") {
                    extra += 1;
                    text.push_str(name);
                    text.push('\n');
                }
                if let Some(c) = o.get("content") {
                    push_content(c, &mut text, "\n");
                }
            }
        }
    }
    for v in [&b.system, &b.instructions].into_iter().flatten() {
        push_content(v, &mut text, "\n");
    }
    for v in [&b.prompt, &b.input].into_iter().flatten() {
        match v {
            // Token-id inputs: one token per id.
            Value::Array(items) if items.iter().all(Value::is_number) => {
                extra += items.len() as u64
            }
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Array(ids) => extra += ids.len() as u64,
                        other => push_item(other, &mut text),
                    }
                }
            }
            other => push_content(other, &mut text, "\n"),
        }
    }
    count(model, &text) + extra
}

/// Append the generated text of one `choices` array (streamed deltas or full
/// messages, chat or legacy completions, tool-call arguments included).
fn push_choices(choices: &Value, out: &mut String) {
    let Value::Array(items) = choices else { return };
    for c in items {
        let Value::Object(c) = c else { continue };
        if let Some(Value::String(t)) = c.get("text") {
            out.push_str(t);
        }
        for key in ["delta", "message"] {
            let Some(Value::Object(m)) = c.get(key) else {
                continue;
            };
            for field in ["content", "refusal", "reasoning_content"] {
                if let Some(v) = m.get(field) {
                    push_content(v, out, "");
                }
            }
            if let Some(Value::Array(calls)) = m.get("tool_calls") {
                for call in calls {
                    if let Some(Value::String(a)) =
                        call.get("function").and_then(|f| f.get("arguments"))
                    {
                        out.push_str(a);
                    }
                }
            }
        }
    }
}

/// Estimated completion tokens from newline-separated `choices` arrays (as a
/// stream tap retains them).
pub fn estimate_completion_from_choices(model: &str, retained: &[u8]) -> u64 {
    let mut text = String::new();
    for v in serde_json::Deserializer::from_slice(retained)
        .into_iter::<Value>()
        .flatten()
    {
        push_choices(&v, &mut text);
    }
    count(model, &text)
}

#[derive(Deserialize)]
struct ResponseBody {
    #[serde(default)]
    choices: Option<Value>,
    /// OpenAI Responses: output items (messages, function calls, ...).
    #[serde(default)]
    output: Option<Vec<Value>>,
    /// Anthropic Messages: content blocks.
    #[serde(default)]
    content: Option<Value>,
}

/// Estimated completion tokens of a non-streamed response body (chat,
/// completions, Responses or Messages).
pub fn estimate_completion_from_body(model: &str, body: &[u8]) -> u64 {
    let mut text = String::new();
    if let Ok(b) = serde_json::from_slice::<ResponseBody>(body) {
        if let Some(c) = &b.choices {
            push_choices(c, &mut text);
        }
        for item in b.output.iter().flatten() {
            if let Value::Object(o) = item {
                for key in ["content", "arguments"] {
                    if let Some(c) = o.get(key) {
                        push_content(c, &mut text, "");
                    }
                }
            }
        }
        if let Some(c) = &b.content {
            push_content(c, &mut text, "");
        }
    }
    count(model, &text)
}

/// Count the tokens of `text` as `model` would (estimate for non-OpenAI models).
#[pyfunction]
#[pyo3(signature = (text, model="gpt-4o"))]
fn count_tokens(py: Python<'_>, text: &str, model: &str) -> u64 {
    py.detach(|| count(model, text))
}

/// Estimate the prompt tokens of a request body.
#[pyfunction]
fn estimate_prompt_tokens(py: Python<'_>, body: &[u8], model: &str) -> u64 {
    py.detach(|| estimate_prompt(model, body))
}

/// Register the token functions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_prompt_tokens, m)?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(count("gpt-4o", "hello world"), 2);
        assert_eq!(count("gpt-4", "hello world"), 2);
        assert_eq!(count("gpt-4o", ""), 0);
    }

    #[test]
    fn prompt_estimate_follows_the_chat_formula() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello world"}]}"#;
        // "user\nhello world\n" + 3 per message + 3 priming.
        let text_tokens = count("gpt-4o", "user\nhello world\n");
        assert_eq!(estimate_prompt("gpt-4o", body), text_tokens + 6);
        let emb = br#"{"model":"text-embedding-3-small","input":["a b","c"]}"#;
        assert_eq!(
            estimate_prompt("text-embedding-3-small", emb),
            count("text-embedding-3-small", "a b\nc\n")
        );
    }

    #[test]
    fn estimates_read_responses_and_messages_bodies() {
        let responses = br#"{"model":"gpt-4o","instructions":"be brief","input":[{"role":"user","content":"hello world"},{"role":"user","content":[{"type":"input_text","text":"again"}]}]}"#;
        assert_eq!(
            estimate_prompt("gpt-4o", responses),
            count("gpt-4o", "be brief\nuser\nhello world\nuser\nagain\n")
        );
        let messages = br#"{"model":"claude-x","system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(
            estimate_prompt("claude-x", messages),
            count("claude-x", "user\nhello world\nbe brief\n") + 6
        );
        let out = br#"{"object":"response","output":[{"type":"reasoning","summary":[]},{"type":"message","content":[{"type":"output_text","text":"hello world"}]}]}"#;
        assert_eq!(estimate_completion_from_body("gpt-4o", out), 2);
        let msg = br#"{"type":"message","content":[{"type":"text","text":"hello world"}]}"#;
        assert_eq!(estimate_completion_from_body("claude-x", msg), 2);
    }

    #[test]
    fn completion_estimate_reads_deltas_and_messages() {
        let retained =
            b"[{\"delta\":{\"content\":\"hello\"}}]\n[{\"delta\":{\"content\":\" world\"}}]\n";
        assert_eq!(estimate_completion_from_choices("gpt-4o", retained), 2);
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"hello world"}}]}"#;
        assert_eq!(estimate_completion_from_body("gpt-4o", body), 2);
    }
}
