//! A server-sent-events framer that finds event boundaries in a byte stream
//! split anywhere: CR, LF and CRLF line ends (a CRLF may itself be split),
//! comments and multi-line `data:` fields.
//!
//! The framer never changes bytes. It reports each complete event as the raw
//! slice it occupied, so a caller can forward, drop or edit whole events and
//! still reproduce the stream exactly.

/// One thing the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a> {
    /// A complete event: its raw bytes including the terminating blank line.
    Event(&'a [u8]),
    /// The LF of a CRLF whose CR ended the previous event, arriving in a later
    /// chunk. It belongs with that event (dropped if the event was dropped).
    TrailingLf,
}

/// Incremental SSE event framer.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the event in progress (always starts at an event start).
    buf: Vec<u8>,
    /// How far into `buf` has been scanned.
    scanned: usize,
    /// Where the current line starts in `buf`.
    line_start: usize,
    /// The previous byte was a CR that ended a line.
    last_was_cr: bool,
    /// That CR also ended an event, at the very end of the last chunk.
    cr_ended_event: bool,
}

impl Framer {
    /// A new framer at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held back because their event is not complete yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Feed the next chunk, calling `f` for each segment completed by it.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(Segment<'_>)) {
        self.buf.extend_from_slice(chunk);
        let mut event_start = 0usize;
        let mut i = self.scanned;
        let len = self.buf.len();
        while i < len {
            let b = self.buf.get(i).copied().unwrap_or(0);
            if b == b'\n' && self.last_was_cr {
                // Second half of a CRLF whose CR already ended the line.
                self.last_was_cr = false;
                if self.cr_ended_event {
                    self.cr_ended_event = false;
                    f(Segment::TrailingLf);
                    event_start = i + 1;
                }
                self.line_start = i + 1;
                i += 1;
                continue;
            }
            self.cr_ended_event = false;
            self.last_was_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let blank = i == self.line_start;
                self.line_start = i + 1;
                if blank {
                    let mut end = i + 1;
                    if b == b'\r' {
                        if self.buf.get(end) == Some(&b'\n') {
                            end += 1;
                            self.last_was_cr = false;
                            self.line_start = end;
                        } else if end == len {
                            self.cr_ended_event = true;
                        }
                    }
                    if let Some(raw) = self.buf.get(event_start..end) {
                        f(Segment::Event(raw));
                    }
                    event_start = end;
                    i = end;
                    continue;
                }
            }
            i += 1;
        }
        if event_start > 0 {
            self.buf.drain(..event_start);
            self.line_start = self.line_start.saturating_sub(event_start);
        }
        self.scanned = self.buf.len();
    }

    /// End of stream: hand back the bytes of an unterminated final event.
    pub fn finish(&mut self) -> Vec<u8> {
        self.scanned = 0;
        self.line_start = 0;
        self.last_was_cr = false;
        self.cr_ended_event = false;
        std::mem::take(&mut self.buf)
    }
}

/// The `data:` field of an event: each data line's value as a byte range of
/// the raw event (the optional single space after the colon excluded).
pub fn data_lines(raw: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    while start < raw.len() {
        let rest = raw.get(start..).unwrap_or_default();
        let line_len = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..line_len).unwrap_or_default();
        if let Some(value) = line.strip_prefix(b"data") {
            let mut vstart = start + 4;
            match value.first() {
                None => out.push((vstart, vstart)),
                Some(b':') => {
                    vstart += 1;
                    if value.get(1) == Some(&b' ') {
                        vstart += 1;
                    }
                    out.push((vstart, start + line_len));
                }
                // `datafoo:` is another field name.
                Some(_) => {}
            }
        }
        let mut next = start + line_len;
        if raw.get(next) == Some(&b'\r') {
            next += 1;
        }
        if raw.get(next) == Some(&b'\n') {
            next += 1;
        }
        if next == start + line_len {
            next += 1;
        }
        start = next;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Frame `input` fed in the given pieces; events as owned byte strings,
    /// with a trailing LF appended to the event it belongs to.
    fn frame(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut fr = Framer::new();
        let mut events: Vec<Vec<u8>> = Vec::new();
        for p in pieces {
            fr.feed(p, |seg| match seg {
                Segment::Event(raw) => events.push(raw.to_vec()),
                Segment::TrailingLf => events.last_mut().unwrap().push(b'\n'),
            });
        }
        (events, fr.finish())
    }

    fn split_at(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for c in cuts {
            out.push(input[prev..c].to_vec());
            prev = c;
        }
        out.push(input[prev..].to_vec());
        out
    }

    #[test]
    fn frames_lf_crlf_and_cr() {
        let (ev, rest) = frame(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d"]);
        assert_eq!(
            ev,
            vec![
                b"data: a\n\n".to_vec(),
                b"data: b\r\n\r\n".to_vec(),
                b"data: c\r\r".to_vec()
            ]
        );
        assert_eq!(rest, b"data: d");
    }

    #[test]
    fn crlf_split_between_cr_and_lf() {
        let (ev, rest) = frame(&[b"data: a\r\n\r", b"\ndata: b\r", b"\n\r\n"]);
        assert_eq!(
            ev,
            vec![b"data: a\r\n\r\n".to_vec(), b"data: b\r\n\r\n".to_vec()]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn data_lines_multi_and_comments() {
        let raw = b": keep-alive\nevent: x\ndata: {\"a\":\ndata:1}\ndatafoo: no\ndata\n\n";
        let lines: Vec<&[u8]> = data_lines(raw)
            .into_iter()
            .map(|(s, e)| &raw[s..e])
            .collect();
        assert_eq!(lines, vec![&b"{\"a\":"[..], b"1}", b""]);
    }

    fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
        let eol = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
        let line = prop_oneof![
            "[a-z0-9 {}\":,]{0,12}".prop_map(|s| format!("data: {s}")),
            Just(": ping".to_owned()),
            Just("data: [DONE]".to_owned()),
            Just("event: message".to_owned()),
        ];
        let event =
            (prop::collection::vec((line, eol.clone()), 1..4), eol).prop_map(|(lines, end)| {
                let mut v = Vec::new();
                for (l, e) in lines {
                    v.extend_from_slice(l.as_bytes());
                    v.extend_from_slice(e);
                }
                v.extend_from_slice(end);
                v
            });
        prop::collection::vec(event, 0..8).prop_map(|evs| evs.concat())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(input in sse_stream(), cuts in prop::collection::vec(0usize..10_000, 0..12)) {
            let whole = frame(&[&input]);
            let pieces = split_at(&input, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            let split = frame(&refs);
            prop_assert_eq!(&whole, &split);
            let mut joined = whole.0.concat();
            joined.extend_from_slice(&whole.1);
            prop_assert_eq!(joined, input);
        }
    }
}
