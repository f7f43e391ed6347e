//! Usage taps for the agent protocols: OpenAI's Responses API and Anthropic's
//! Messages API. One tap per protocol watches a typed SSE stream as it passes
//! (bytes are never changed: both protocols always report usage, so nothing
//! is injected or stripped), records the usage, whether the protocol's
//! terminal event arrived, and the generated text an estimate would need.
//!
//! Token classes, normalised so that one price formula fits both:
//! `prompt` is every input token (for Messages: `input_tokens` +
//! `cache_read_input_tokens` + `cache_creation_input_tokens`, which Anthropic
//! reports apart), `cached` the part of it read from the cache, `cache_write`
//! the part written to it, `completion` every output token and `reasoning`
//! the part of it spent on reasoning.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::request::raw_some;
use crate::sse::{Framer, Segment, data_lines};

/// The wire protocol of a proxied endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OpenAI chat / completions / embeddings (see `usage.rs`).
    #[default]
    Chat,
    /// OpenAI Responses API.
    Responses,
    /// Anthropic Messages API.
    Messages,
}

impl Protocol {
    /// Parse the name used by Python (`chat`, `responses`, `messages`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "chat" => Some(Protocol::Chat),
            "responses" => Some(Protocol::Responses),
            "messages" => Some(Protocol::Messages),
            _ => None,
        }
    }
}

/// Usage in the normalised token classes (see the module docs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// All input tokens.
    pub prompt: Option<u64>,
    /// All output tokens.
    pub completion: Option<u64>,
    /// Input tokens read from the prompt cache.
    pub cached: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
    /// Output tokens spent on reasoning.
    pub reasoning: u64,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// `usage` of a Responses API response object.
#[derive(Deserialize, Default, Clone, Copy)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

impl ResponsesUsage {
    fn tokens(self) -> Tokens {
        Tokens {
            prompt: self.input_tokens,
            completion: self.output_tokens,
            cached: self
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write: self
                .input_tokens_details
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or(0),
            reasoning: self
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// `usage` of a Messages API message or `message_delta` event. Every member
/// is optional: a `message_delta` may repeat only some (its counts are
/// cumulative, so a value present replaces the earlier one).
#[derive(Deserialize, Default, Clone, Copy, Debug, PartialEq, Eq)]
struct MessagesUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl MessagesUsage {
    fn merge(&mut self, later: MessagesUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    fn tokens(self) -> Tokens {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Tokens {
            prompt: self
                .input_tokens
                .map(|i| i.saturating_add(read).saturating_add(write)),
            completion: self.output_tokens,
            cached: read,
            cache_write: write,
            reasoning: 0,
        }
    }
}

#[derive(Deserialize)]
struct WithResponsesUsage {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct WithMessagesUsage {
    #[serde(default)]
    usage: Option<MessagesUsage>,
}

/// Usage of a non-streamed JSON response of `protocol` (`None` for chat:
/// `usage::body_usage` reads those).
pub fn body_tokens(protocol: Protocol, body: &[u8]) -> Option<Tokens> {
    match protocol {
        Protocol::Chat => None,
        Protocol::Responses => serde_json::from_slice::<WithResponsesUsage>(body)
            .ok()?
            .usage
            .map(ResponsesUsage::tokens),
        Protocol::Messages => serde_json::from_slice::<WithMessagesUsage>(body)
            .ok()?
            .usage
            .map(MessagesUsage::tokens),
    }
}

/// The members of a Responses event the tap reads.
#[derive(Deserialize)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    response: Option<WithResponsesUsage>,
    #[serde(borrow, default, deserialize_with = "raw_some")]
    delta: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct TextDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

/// The members of a Messages event the tap reads.
#[derive(Deserialize)]
struct MessagesEvent<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    message: Option<WithMessagesUsage>,
    #[serde(default)]
    usage: Option<MessagesUsage>,
    #[serde(borrow, default, deserialize_with = "raw_some")]
    delta: Option<&'a RawValue>,
}

/// Cap on the generated text kept for token estimation of one stream.
const RETAIN_LIMIT: usize = 8 << 20;

/// Watches one Responses or Messages SSE stream (never edits it).
#[derive(Debug, Default)]
pub struct EventTap {
    protocol: Protocol,
    framer: Framer,
    messages_usage: Option<MessagesUsage>,
    /// The last usage the provider reported, normalised.
    pub usage: Option<Tokens>,
    /// The protocol's terminal event arrived (`response.completed`,
    /// `response.incomplete`, `response.failed`; `message_stop`).
    pub saw_end: bool,
    /// Data events seen.
    pub events: u64,
    /// Generated text, one JSON line `[{"text": ...}]` per delta: the shape
    /// `tokens::estimate_completion_from_choices` reads.
    retained: Vec<u8>,
}

impl EventTap {
    /// A tap for a stream of `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        EventTap {
            protocol,
            ..Default::default()
        }
    }

    /// Feed a chunk of the stream (as it arrived, split anywhere).
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(chunk, |seg| {
            if let Segment::Event(raw) = seg {
                self.event(raw);
            }
        });
        self.framer = framer;
    }

    /// End of stream: an unterminated last event is still read.
    pub fn finish(&mut self) {
        let rest = self.framer.finish();
        if !rest.is_empty() {
            self.event(&rest);
        }
    }

    /// Bytes of the event still being framed (the event-size cap's measure).
    pub fn pending_len(&self) -> usize {
        self.framer.pending().len()
    }

    /// The retained generated text (see `retained`).
    pub fn retained(&self) -> &[u8] {
        &self.retained
    }

    fn event(&mut self, raw: &[u8]) {
        let lines = data_lines(raw);
        if lines.is_empty() {
            return;
        }
        let data: Vec<u8> = lines
            .iter()
            .map(|(s, e)| raw.get(*s..*e).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(&b'\n');
        self.events += 1;
        match self.protocol {
            Protocol::Responses => self.responses_event(&data),
            Protocol::Messages => self.messages_event(&data),
            Protocol::Chat => {}
        }
    }

    fn retain(&mut self, text: &str) {
        if text.is_empty() || self.retained.len() >= RETAIN_LIMIT {
            return;
        }
        let line = serde_json::json!([{ "text": text }]);
        if let Ok(bytes) = serde_json::to_vec(&line) {
            self.retained.extend_from_slice(&bytes);
            self.retained.push(b'\n');
        }
    }

    fn responses_event(&mut self, data: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<ResponsesEvent<'_>>(data) else {
            return;
        };
        let kind = ev.kind.unwrap_or_default();
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed"
        ) {
            self.saw_end = true;
        }
        if let Some(u) = ev.response.and_then(|r| r.usage) {
            self.usage = Some(u.tokens());
        }
        if kind.ends_with(".delta") {
            if let Some(Ok(text)) = ev.delta.map(|d| serde_json::from_str::<String>(d.get())) {
                self.retain(&text);
            }
        }
    }

    fn messages_event(&mut self, data: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<MessagesEvent<'_>>(data) else {
            return;
        };
        let kind = ev.kind.unwrap_or_default();
        if kind == "message_stop" {
            self.saw_end = true;
        }
        for u in [ev.message.and_then(|m| m.usage), ev.usage]
            .into_iter()
            .flatten()
        {
            let merged = self.messages_usage.get_or_insert_default();
            merged.merge(u);
            self.usage = Some(merged.tokens());
        }
        if kind == "content_block_delta" {
            if let Some(Ok(d)) = ev.delta.map(|d| serde_json::from_str::<TextDelta>(d.get())) {
                for t in [d.text, d.partial_json, d.thinking].into_iter().flatten() {
                    self.retain(&t);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::tokens;
    use proptest::prelude::*;

    const RESPONSES: &[u8] = b"event: response.created\n\
data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n\
event: response.output_text.delta\n\
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\"hello\"}\n\n\
event: response.output_text.delta\n\
data: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,\"item_id\":\"m\",\"output_index\":0,\"content_index\":0,\"delta\":\" world\"}\n\n\
event: response.completed\n\
data: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"hello world\"}]}],\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":16,\"cache_write_tokens\":8},\"output_tokens\":12,\"output_tokens_details\":{\"reasoning_tokens\":10},\"total_tokens\":52}}}\n\n";

    const MESSAGES: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":300,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello world\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    fn run(protocol: Protocol, pieces: &[&[u8]]) -> EventTap {
        let mut tap = EventTap::new(protocol);
        for p in pieces {
            tap.feed(p);
        }
        tap.finish();
        tap
    }

    fn responses_expected() -> Tokens {
        Tokens {
            prompt: Some(40),
            completion: Some(12),
            cached: 16,
            cache_write: 8,
            reasoning: 10,
        }
    }

    fn messages_expected() -> Tokens {
        Tokens {
            prompt: Some(425),
            completion: Some(15),
            cached: 300,
            cache_write: 100,
            reasoning: 0,
        }
    }

    #[test]
    fn responses_usage_from_the_final_response() {
        let tap = run(Protocol::Responses, &[RESPONSES]);
        assert_eq!(tap.usage, Some(responses_expected()));
        assert!(tap.saw_end);
        assert_eq!(tap.events, 4);
        assert_eq!(
            tokens::estimate_completion_from_choices("gpt-4o", tap.retained()),
            2
        );
    }

    #[test]
    fn messages_usage_from_start_and_delta() {
        let tap = run(Protocol::Messages, &[MESSAGES]);
        assert_eq!(tap.usage, Some(messages_expected()));
        assert!(tap.saw_end);
        assert_eq!(
            tokens::estimate_completion_from_choices("claude-sonnet-4", tap.retained()),
            2
        );
    }

    #[test]
    fn a_cut_stream_has_no_end_and_keeps_what_came() {
        let cut = MESSAGES.len() / 2;
        let tap = run(Protocol::Messages, &[&MESSAGES[..cut]]);
        assert!(!tap.saw_end);
        assert_eq!(tap.usage.unwrap().prompt, Some(425));
        assert_eq!(tap.usage.unwrap().completion, Some(1));
        let tap = run(Protocol::Responses, &[&RESPONSES[..RESPONSES.len() - 40]]);
        assert!(!tap.saw_end);
        assert_eq!(tap.usage, None);
    }

    #[test]
    fn later_message_delta_fields_replace_earlier_ones() {
        let src = b"data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":2,\"output_tokens\":9}}\n\n";
        let tap = run(Protocol::Messages, &[src]);
        let u = tap.usage.unwrap();
        assert_eq!((u.prompt, u.completion, u.cached), (Some(9), Some(9), 2));
    }

    #[test]
    fn body_tokens_per_protocol() {
        let r = br#"{"id":"resp_1","object":"response","usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":16,"cache_write_tokens":8},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":10}}}"#;
        assert_eq!(
            body_tokens(Protocol::Responses, r),
            Some(responses_expected())
        );
        let m = br#"{"id":"msg_1","type":"message","content":[],"usage":{"input_tokens":25,"cache_creation_input_tokens":100,"cache_read_input_tokens":300,"output_tokens":15}}"#;
        assert_eq!(
            body_tokens(Protocol::Messages, m),
            Some(messages_expected())
        );
        assert_eq!(body_tokens(Protocol::Messages, b"not json"), None);
        assert_eq!(body_tokens(Protocol::Responses, br#"{"usage":null}"#), None);
        assert_eq!(body_tokens(Protocol::Chat, m), None);
    }

    #[test]
    fn garbage_events_are_ignored() {
        let tap = run(
            Protocol::Responses,
            &[b"data: nope\n\ndata: {\"type\":5}\n\n: c\n\n"],
        );
        assert_eq!((tap.usage, tap.saw_end), (None, false));
    }

    fn pieces(src: &[u8], cuts: Vec<usize>) -> Vec<&[u8]> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % src.len()).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for c in cuts {
            out.push(&src[prev..c]);
            prev = c;
        }
        out.push(&src[prev..]);
        out
    }

    fn crlf(src: &[u8], on: bool) -> Vec<u8> {
        if on {
            String::from_utf8(src.to_vec())
                .unwrap()
                .replace('\n', "\r\n")
                .into_bytes()
        } else {
            src.to_vec()
        }
    }

    proptest! {
        #[test]
        fn responses_tap_is_the_same_for_any_split(cuts in prop::collection::vec(0usize..10_000, 0..12), on in any::<bool>()) {
            let src = crlf(RESPONSES, on);
            let tap = run(Protocol::Responses, &pieces(&src, cuts));
            prop_assert_eq!(tap.usage, Some(responses_expected()));
            prop_assert!(tap.saw_end);
            prop_assert_eq!(tap.events, 4);
        }

        #[test]
        fn messages_tap_is_the_same_for_any_split(cuts in prop::collection::vec(0usize..10_000, 0..12), on in any::<bool>()) {
            let src = crlf(MESSAGES, on);
            let tap = run(Protocol::Messages, &pieces(&src, cuts));
            prop_assert_eq!(tap.usage, Some(messages_expected()));
            prop_assert!(tap.saw_end);
            prop_assert_eq!(tap.events, 7);
        }
    }
}
