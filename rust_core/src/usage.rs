//! Usage extraction from provider responses, and the stream tap that watches
//! an SSE stream as it passes: it records usage, keeps what token estimation
//! would need, and removes the usage artefacts the gateway asked for on the
//! client's behalf (the final usage-only event and `"usage":null` members).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::request::raw_some;
use crate::sse::{Framer, Segment, data_lines};

/// Token usage as providers report it (OpenAI field names; Anthropic-style
/// `input_tokens` / `output_tokens` accepted as aliases).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens.
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: Option<u64>,
    /// Cache details.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
}

/// The part of `prompt_tokens` served from the provider's prompt cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PromptDetails {
    /// Cached prompt tokens.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

/// Upper bound on any one usage figure of one request. The largest context
/// windows are a few million tokens; a figure past this is a provider (or
/// something on its path) lying, and trusting it stored absurd costs and, past
/// 2^63, values the store cannot hold at all.
pub const MAX_TOKENS: u64 = 100_000_000;

impl Usage {
    /// This usage if every figure is within [`MAX_TOKENS`], else `None`, so the
    /// caller estimates tokens instead (and records them as estimated).
    /// Negative, fractional, string or over-`u64` figures never get here: they
    /// fail to deserialize, which is `None` as well.
    pub fn sane(self) -> Option<Usage> {
        let figures = [
            self.prompt_tokens,
            self.completion_tokens,
            self.prompt_tokens_details.and_then(|d| d.cached_tokens),
        ];
        figures
            .iter()
            .flatten()
            .all(|v| *v <= MAX_TOKENS)
            .then_some(self)
    }

    /// Cached prompt tokens, 0 when not reported.
    pub fn cached(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
}

#[derive(Deserialize)]
struct BodyUsage {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The `usage` object of a non-streamed JSON response, if it has one.
pub fn body_usage(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<BodyUsage>(body)
        .ok()?
        .usage?
        .sane()
}

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(borrow, default, deserialize_with = "raw_some")]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "raw_some")]
    choices: Option<&'a RawValue>,
}

/// What to do with one event.
enum Action {
    Keep,
    Drop,
    /// Remove `data[start..end]` (a member and its comma) from the event.
    Cut(usize, usize),
}

/// Byte range of the member whose value spans `value` inside the JSON object
/// text `data`, including one separating comma, if the key is `key`.
fn member_range(data: &[u8], value: (usize, usize), key: &[u8]) -> Option<(usize, usize)> {
    let ws = |b: &u8| b.is_ascii_whitespace();
    let mut i = value.0;
    while i > 0 && data.get(i - 1).is_some_and(ws) {
        i -= 1;
    }
    if i == 0 || data.get(i - 1) != Some(&b':') {
        return None;
    }
    i -= 1;
    while i > 0 && data.get(i - 1).is_some_and(ws) {
        i -= 1;
    }
    let key_start = i.checked_sub(key.len())?;
    if data.get(key_start..i) != Some(key) {
        return None;
    }
    let mut j = key_start;
    while j > 0 && data.get(j - 1).is_some_and(ws) {
        j -= 1;
    }
    match data.get(j.checked_sub(1)?) {
        Some(b',') => Some((j - 1, value.1)),
        Some(b'{') => {
            // First member: take the comma after it instead.
            let mut k = value.1;
            while data.get(k).is_some_and(ws) {
                k += 1;
            }
            if data.get(k) == Some(&b',') {
                Some((key_start, k + 1))
            } else {
                Some((key_start, value.1))
            }
        }
        _ => None,
    }
}

fn is_empty_array(raw: &RawValue) -> bool {
    let t = raw.get().trim();
    t.starts_with('[')
        && t.ends_with(']')
        && t.get(1..t.len() - 1).is_some_and(|s| s.trim().is_empty())
}

/// Cap on the `choices` text kept for token estimation of one stream.
const RETAIN_LIMIT: usize = 8 << 20;

/// Watches one SSE response stream.
#[derive(Debug, Default)]
pub struct StreamTap {
    framer: Framer,
    /// Remove usage the client did not ask for.
    strip: bool,
    /// Whether the last event was forwarded (for a trailing LF).
    last_kept: bool,
    /// The last usage the provider reported.
    pub usage: Option<Usage>,
    /// A `data: [DONE]` event was seen.
    pub saw_done: bool,
    /// Data events seen.
    pub events: u64,
    /// Concatenated `choices` arrays, for estimation without usage.
    retained: Vec<u8>,
    /// `retained` hit its cap; estimation is from a prefix.
    pub retained_truncated: bool,
}

impl StreamTap {
    /// A tap; with `strip`, usage artefacts are removed from what is forwarded.
    pub fn new(strip: bool) -> Self {
        StreamTap {
            strip,
            last_kept: true,
            ..Default::default()
        }
    }

    /// Feed a chunk. Returns `None` when the chunk goes to the client as is,
    /// else the bytes to send instead (possibly empty, when an event is
    /// incomplete or was dropped).
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let mut out = if self.strip {
            Some(Vec::with_capacity(chunk.len()))
        } else {
            None
        };
        let mut framer = std::mem::take(&mut self.framer);
        framer.feed(chunk, |seg| match seg {
            Segment::TrailingLf => {
                if let (Some(o), true) = (out.as_mut(), self.last_kept) {
                    o.push(b'\n');
                }
            }
            Segment::Event(raw) => {
                let action = self.inspect(raw);
                if let Some(o) = out.as_mut() {
                    match action {
                        Action::Keep => o.extend_from_slice(raw),
                        Action::Drop => {}
                        Action::Cut(s, e) => {
                            o.extend_from_slice(raw.get(..s).unwrap_or_default());
                            o.extend_from_slice(raw.get(e..).unwrap_or_default());
                        }
                    }
                }
                self.last_kept = !matches!(action, Action::Drop);
            }
        });
        self.framer = framer;
        out
    }

    /// End of stream: the bytes of an unterminated last event, which are
    /// forwarded as they are when stripping held them back.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = self.framer.finish();
        if self.strip { rest } else { Vec::new() }
    }

    /// Look at one complete event; decide its fate when stripping.
    fn inspect(&mut self, raw: &[u8]) -> Action {
        let lines = data_lines(raw);
        let (start, end) = match lines.as_slice() {
            [] => return Action::Keep,
            [one] => *one,
            // Multi-line data: inspect the joined value but never edit it.
            _ => {
                let joined: Vec<u8> = lines
                    .iter()
                    .map(|(s, e)| raw.get(*s..*e).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(&b'\n');
                return match self.inspect_data(&joined) {
                    Action::Drop => Action::Drop,
                    _ => Action::Keep,
                };
            }
        };
        let data = raw.get(start..end).unwrap_or_default();
        match self.inspect_data(data) {
            Action::Cut(s, e) => Action::Cut(start + s, start + e),
            other => other,
        }
    }

    fn inspect_data(&mut self, data: &[u8]) -> Action {
        self.events += 1;
        if data == b"[DONE]" {
            self.saw_done = true;
            return Action::Keep;
        }
        let Ok(peek) = serde_json::from_slice::<ChunkPeek<'_>>(data) else {
            return Action::Keep;
        };
        if let Some(choices) = peek.choices {
            if !is_empty_array(choices) && self.retained.len() < RETAIN_LIMIT {
                self.retained.extend_from_slice(choices.get().as_bytes());
                self.retained.push(b'\n');
            } else if self.retained.len() >= RETAIN_LIMIT {
                self.retained_truncated = true;
            }
        }
        let Some(usage_raw) = peek.usage else {
            return Action::Keep;
        };
        let is_null = usage_raw.get().trim() == "null";
        if !is_null {
            // An invalid figure is ignored like unparseable usage: an earlier
            // valid report stands, else the tokens are estimated.
            if let Some(u) = serde_json::from_str::<Usage>(usage_raw.get())
                .ok()
                .and_then(Usage::sane)
            {
                self.usage = Some(u);
            }
        }
        if !self.strip {
            return Action::Keep;
        }
        let no_choices = peek.choices.is_none_or(is_empty_array);
        if !is_null && no_choices {
            return Action::Drop;
        }
        let base = data.as_ptr() as usize;
        let vstart = (usage_raw.get().as_ptr() as usize).saturating_sub(base);
        let span = (vstart, vstart + usage_raw.get().len());
        match member_range(data, span, b"\"usage\"") {
            Some((s, e)) => Action::Cut(s, e),
            None => Action::Keep,
        }
    }

    /// The retained `choices` arrays, one per line.
    pub fn retained(&self) -> &[u8] {
        &self.retained
    }

    /// Bytes of the event in progress (held until its blank line arrives).
    pub fn pending_len(&self) -> usize {
        self.framer.pending().len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WITH_USAGE: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
data: [DONE]\n\n";
    const WITHOUT_USAGE: &[u8] =
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"}}]}\n\n\
data: [DONE]\n\n";

    fn run(tap: &mut StreamTap, pieces: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces {
            match tap.feed(p) {
                None => out.extend_from_slice(p),
                Some(v) => out.extend_from_slice(&v),
            }
        }
        out.extend_from_slice(&tap.finish());
        out
    }

    #[test]
    fn body_usage_reads_openai_and_anthropic_names() {
        let u = body_usage(br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached()),
            (Some(3), Some(5), 1)
        );
        let u = body_usage(br#"{"usage":{"input_tokens":7,"output_tokens":2}}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached()),
            (Some(7), Some(2), 0)
        );
        assert!(body_usage(b"not json").is_none());
        assert!(body_usage(br#"{"data":[]}"#).is_none());
    }

    #[test]
    fn absurd_usage_figures_are_no_usage() {
        for bad in [
            "18446744073709551616",
            "18446744073709551615",
            "9223372036854775808",
            "100000001",
            "-1",
            "1e30",
            "12.5",
            "\"12\"",
            "true",
        ] {
            for field in ["prompt_tokens", "completion_tokens", "input_tokens"] {
                let body = format!(r#"{{"usage":{{"{field}":{bad}}}}}"#);
                assert_eq!(body_usage(body.as_bytes()), None, "{body}");
            }
            let cached = format!(
                r#"{{"usage":{{"prompt_tokens":5,"prompt_tokens_details":{{"cached_tokens":{bad}}}}}}}"#
            );
            assert_eq!(body_usage(cached.as_bytes()), None, "{cached}");
            let sse = format!(
                "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{bad},\"completion_tokens\":1}}}}\n\n"
            );
            let mut tap = StreamTap::new(true);
            run(&mut tap, &[sse.as_bytes()]);
            assert_eq!(tap.usage, None, "{sse}");
        }
        let at_cap = format!(r#"{{"usage":{{"prompt_tokens":{MAX_TOKENS}}}}}"#);
        assert_eq!(
            body_usage(at_cap.as_bytes()).and_then(|u| u.prompt_tokens),
            Some(MAX_TOKENS)
        );
    }

    #[test]
    fn an_absurd_late_report_keeps_the_earlier_valid_one() {
        let src = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9223372036854775807,\"completion_tokens\":1}}\n\n";
        let mut tap = StreamTap::new(false);
        run(&mut tap, &[src]);
        assert_eq!(tap.usage.and_then(|u| u.prompt_tokens), Some(3));
    }

    #[test]
    fn strip_restores_the_stream_the_client_would_have_got() {
        let mut tap = StreamTap::new(true);
        let out = run(&mut tap, &[WITH_USAGE]);
        assert_eq!(out, WITHOUT_USAGE);
        let u = tap.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached()),
            (Some(9), Some(2), 4)
        );
        assert!(tap.saw_done);
    }

    #[test]
    fn passthrough_keeps_bytes_and_reads_usage() {
        let mut tap = StreamTap::new(false);
        let out = run(&mut tap, &[&WITH_USAGE[..50], &WITH_USAGE[50..]]);
        assert_eq!(out, WITH_USAGE);
        assert_eq!(tap.usage.unwrap().completion_tokens, Some(2));
    }

    #[test]
    fn usage_on_a_content_chunk_is_cut_not_dropped() {
        let src = b"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1},\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
        let mut tap = StreamTap::new(true);
        let out = run(&mut tap, &[src]);
        assert_eq!(
            out,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
        );
    }

    #[test]
    fn member_range_handles_positions() {
        let d = br#"{"a":1, "usage" : null}"#;
        let v = (18, 22);
        assert_eq!(&d[v.0..v.1], b"null");
        let (s, e) = member_range(d, v, b"\"usage\"").unwrap();
        let mut out = d.to_vec();
        out.drain(s..e);
        assert_eq!(out, br#"{"a":1}"#);
        let d = br#"{"usage":null,"a":1}"#;
        let (s, e) = member_range(d, (9, 13), b"\"usage\"").unwrap();
        let mut out = d.to_vec();
        out.drain(s..e);
        assert_eq!(out, br#"{"a":1}"#);
    }

    proptest! {
        #[test]
        fn strip_is_the_same_for_any_split(cuts in prop::collection::vec(0usize..WITH_USAGE.len(), 0..10), crlf in any::<bool>()) {
            let src: Vec<u8> = if crlf {
                String::from_utf8(WITH_USAGE.to_vec()).unwrap().replace('\n', "\r\n").into_bytes()
            } else { WITH_USAGE.to_vec() };
            let expect: Vec<u8> = if crlf {
                String::from_utf8(WITHOUT_USAGE.to_vec()).unwrap().replace('\n', "\r\n").into_bytes()
            } else { WITHOUT_USAGE.to_vec() };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % src.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut prev = 0;
            for c in cuts { pieces.push(&src[prev..c]); prev = c; }
            pieces.push(&src[prev..]);
            let mut tap = StreamTap::new(true);
            prop_assert_eq!(run(&mut tap, &pieces), expect);
            prop_assert_eq!(tap.usage.unwrap().prompt_tokens, Some(9));
            let mut pass = StreamTap::new(false);
            prop_assert_eq!(run(&mut pass, &pieces), src.clone());
            prop_assert_eq!(pass.usage.unwrap().prompt_tokens, Some(9));
        }
    }
}
