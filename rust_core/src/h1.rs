//! HTTP/1.1 to the provider without any I/O: the request encoder and a
//! response reader fed the bytes the event loop received. Python owns the
//! sockets (asyncio on uvloop), so a request never leaves the event-loop
//! thread; this module only turns bytes into bytes and facts.
//!
//! The reader decodes `Content-Length`, chunked and read-until-close bodies,
//! buffers a non-SSE body whole (up to a cap, past which it streams), and runs
//! an SSE body through the usage tap as it arrives.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::CoreError;
use crate::headers::{AuthStyle, client_response_headers, upstream_request_headers};
use crate::protocols::{EventTap, Protocol, Tokens, body_tokens};
use crate::tokens;
use crate::usage::{StreamTap, Usage, body_usage};

/// A response head larger than this is refused (hyper's default is ~400 KiB
/// across 100 headers; providers send a few KiB).
const MAX_HEAD: usize = 256 << 10;
/// Most headers a response head may carry.
const MAX_HEADERS: usize = 128;
/// Default largest SSE event held while its blank line is awaited.
pub const DEFAULT_MAX_EVENT: usize = 4 << 20;

/// Whether `b` is an HTTP token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// A field value: no control character but tab (CR or LF would split the
/// head and let a client inject headers).
fn is_field_value(s: &str) -> bool {
    !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// The request as bytes ready for the socket: request line, `host`, the
/// client's headers as [`upstream_request_headers`] forwards them (a header
/// that is not a valid field is dropped, never sent broken), the length and
/// the body.
pub fn encode(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
    style: AuthStyle,
) -> Result<Vec<u8>, CoreError> {
    if !is_token(method) {
        return Err(CoreError::InvalidArgument("invalid HTTP method".to_owned()));
    }
    if target.is_empty() || !is_field_value(target) || target.contains(' ') {
        return Err(CoreError::InvalidArgument(
            "invalid request target".to_owned(),
        ));
    }
    if host.is_empty() || !is_field_value(host) {
        return Err(CoreError::InvalidArgument("invalid host".to_owned()));
    }
    let forwarded = upstream_request_headers(headers, style);
    let size = method.len()
        + target.len()
        + host.len()
        + 64
        + forwarded
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
        + body.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &forwarded {
        if !is_token(name) || !is_field_value(value) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.trim().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS") {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding, in the given state.
    Chunked(ChunkState),
    /// The body runs until the provider closes the connection.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes remain.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Where the reader is; also what `feed` returns to Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the head, or buffering a non-SSE body: nothing to hand on.
    Pending = 0,
    /// Head known, body streaming: the response can go to the client and
    /// `take` yields what has arrived.
    Streaming = 1,
    /// The whole message arrived.
    Done = 2,
}

/// Incremental parser of one HTTP/1.1 response.
#[pyclass(module = "lectr._core")]
pub struct ResponseReader {
    phase: Phase,
    /// Bytes not yet consumed: the head so far, or chunked framing.
    buf: Vec<u8>,
    head_seen: bool,
    status: u16,
    headers: Vec<(String, String)>,
    is_sse: bool,
    keep_alive: bool,
    framing: Framing,
    no_body: bool,
    /// Buffered body (non-SSE): whole when `phase` is `Done` and it never
    /// outgrew the cap, else the prefix handed out first.
    body: Vec<u8>,
    buffering: bool,
    max_buffered: usize,
    strip_usage: bool,
    tap: Option<StreamTap>,
    /// Largest SSE event (bytes before its blank line) the tap may hold: a
    /// provider's endless line would otherwise grow it without limit.
    max_event: usize,
    /// The body length the provider declared (`content-length`), if any.
    declared_length: Option<u64>,
    /// Streamed output not yet taken.
    out: Vec<u8>,
    usage: Option<Usage>,
    received: u64,
    /// The endpoint's protocol: which tap reads an SSE body and how a JSON
    /// body's usage is read.
    protocol: Protocol,
    /// The Responses / Messages tap (instead of `tap`).
    events: Option<EventTap>,
    /// Usage of a Responses / Messages response, normalised.
    tokens: Option<Tokens>,
}

impl ResponseReader {
    /// A reader for the response to a request; `head_request` when the
    /// request was HEAD (the response then has no body whatever it says).
    pub fn create(
        max_buffered: usize,
        strip_usage: bool,
        head_request: bool,
        max_event: usize,
    ) -> Self {
        ResponseReader {
            phase: Phase::Pending,
            buf: Vec::new(),
            head_seen: false,
            status: 0,
            headers: Vec::new(),
            is_sse: false,
            keep_alive: false,
            framing: Framing::Close,
            no_body: head_request,
            body: Vec::new(),
            buffering: false,
            max_buffered,
            strip_usage,
            tap: None,
            max_event,
            declared_length: None,
            out: Vec::new(),
            usage: None,
            received: 0,
            protocol: Protocol::Chat,
            events: None,
            tokens: None,
        }
    }

    /// The same reader for a response of `protocol`.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Consume bytes from the connection.
    pub fn push(&mut self, data: &[u8]) -> Result<Phase, CoreError> {
        self.received += data.len() as u64;
        if self.phase == Phase::Done {
            // Bytes after a complete response: the connection is not reusable.
            self.keep_alive &= data.is_empty();
            return Ok(Phase::Done);
        }
        if !self.head_seen {
            self.buf.extend_from_slice(data);
            if !self.parse_head()? {
                return Ok(self.phase);
            }
            let rest = std::mem::take(&mut self.buf);
            self.body_bytes(&rest)?;
        } else {
            self.body_bytes(data)?;
        }
        Ok(self.phase)
    }

    /// The provider closed its side.
    pub fn close_input(&mut self) -> Result<Phase, CoreError> {
        self.keep_alive = false;
        match self.phase {
            Phase::Done => Ok(Phase::Done),
            _ if !self.head_seen => Err(CoreError::Truncated(if self.received == 0 {
                "the provider closed the connection without a response".to_owned()
            } else {
                "the provider closed the connection mid-head".to_owned()
            })),
            _ if self.framing == Framing::Close => {
                self.finish();
                Ok(self.phase)
            }
            _ => Err(CoreError::Truncated(
                "the provider closed the connection before the body was complete".to_owned(),
            )),
        }
    }

    /// Parse the head from `buf`; true once it is complete (1xx heads skipped).
    fn parse_head(&mut self) -> Result<bool, CoreError> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut slots);
            let len = match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(CoreError::BadResponse(
                            "the provider's response head is too large".to_owned(),
                        ));
                    }
                    return Ok(false);
                }
                Err(e) => {
                    return Err(CoreError::BadResponse(format!(
                        "invalid response head from the provider: {e}"
                    )));
                }
            };
            let status = resp.code.unwrap_or(0);
            if (100..200).contains(&status) {
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                self.buf.drain(..len);
                continue;
            }
            if !(200..=599).contains(&status) {
                // httparse takes any three digits; the HTTP server answering the
                // client panics on a status outside 100-599, so it stops here.
                return Err(CoreError::BadResponse(format!(
                    "invalid status code {status:03} from the provider"
                )));
            }
            let version = resp.version.unwrap_or(1);
            let pairs: Vec<(&str, &[u8])> =
                resp.headers.iter().map(|h| (h.name, h.value)).collect();
            let mut chunked = false;
            let mut length: Option<u64> = None;
            let mut close = version == 0;
            let mut sse = false;
            for (name, value) in &pairs {
                if name.eq_ignore_ascii_case("transfer-encoding") {
                    // Only `chunked` as the final coding frames the body.
                    chunked = value
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if name.eq_ignore_ascii_case("content-length") {
                    let n = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .ok_or_else(|| {
                            CoreError::BadResponse(
                                "invalid content-length from the provider".to_owned(),
                            )
                        })?;
                    if length.is_some_and(|l| l != n) {
                        return Err(CoreError::BadResponse(
                            "conflicting content-length from the provider".to_owned(),
                        ));
                    }
                    length = Some(n);
                } else if name.eq_ignore_ascii_case("connection") {
                    close |= value
                        .split(|b| *b == b',')
                        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
                } else if name.eq_ignore_ascii_case("content-type") {
                    sse = value
                        .trim_ascii_start()
                        .get(..17)
                        .is_some_and(|p| p.eq_ignore_ascii_case(b"text/event-stream"));
                }
            }
            self.headers = client_response_headers(&pairs);
            self.status = status;
            self.is_sse = sse;
            self.head_seen = true;
            self.buf.drain(..len);
            self.no_body |= status == 204 || status == 304;
            self.framing = if self.no_body {
                Framing::Length(0)
            } else if chunked {
                Framing::Chunked(ChunkState::Size)
            } else if let Some(n) = length {
                self.declared_length = Some(n);
                Framing::Length(n)
            } else {
                close = true;
                Framing::Close
            };
            self.keep_alive = !close;
            if sse && self.protocol != Protocol::Chat {
                self.events = Some(EventTap::new(self.protocol));
                self.phase = Phase::Streaming;
            } else if sse {
                self.tap = Some(StreamTap::new(self.strip_usage));
                self.phase = Phase::Streaming;
            } else {
                self.buffering = true;
            }
            if self.framing == Framing::Length(0) {
                self.finish();
            }
            return Ok(true);
        }
    }

    /// Decode body bytes as framed.
    fn body_bytes(&mut self, data: &[u8]) -> Result<(), CoreError> {
        match self.framing {
            Framing::Close => self.emit(data)?,
            Framing::Length(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                let (now, extra) = data.split_at(take);
                self.emit(now)?;
                let left = left - take as u64;
                self.framing = Framing::Length(left);
                if left == 0 {
                    if !extra.is_empty() {
                        self.keep_alive = false;
                    }
                    self.finish();
                }
            }
            Framing::Chunked(_) => {
                self.buf.extend_from_slice(data);
                self.dechunk()?;
            }
        }
        Ok(())
    }

    /// Decode what chunked framing `buf` holds.
    fn dechunk(&mut self) -> Result<(), CoreError> {
        let mut pos = 0;
        let buf = std::mem::take(&mut self.buf);
        let result = loop {
            let Framing::Chunked(state) = self.framing else {
                break Ok(());
            };
            let rest = buf.get(pos..).unwrap_or_default();
            match state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        pos += used;
                        self.framing = Framing::Chunked(ChunkState::Trailers);
                    }
                    Ok(httparse::Status::Complete((used, n))) => {
                        pos += used;
                        self.framing = Framing::Chunked(ChunkState::Data(n));
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > 4096 {
                            break Err(CoreError::BadResponse(
                                "invalid chunk size line from the provider".to_owned(),
                            ));
                        }
                        break Ok(());
                    }
                    Err(_) => {
                        break Err(CoreError::BadResponse(
                            "invalid chunked body from the provider".to_owned(),
                        ));
                    }
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        break Ok(());
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    let piece = rest.get(..take).unwrap_or_default();
                    if let Err(e) = self.emit(piece) {
                        break Err(e);
                    }
                    pos += take;
                    let left = left - take as u64;
                    self.framing = Framing::Chunked(if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    });
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        break Ok(());
                    }
                    if rest.get(..2) != Some(b"\r\n") {
                        break Err(CoreError::BadResponse(
                            "invalid chunked body from the provider".to_owned(),
                        ));
                    }
                    pos += 2;
                    self.framing = Framing::Chunked(ChunkState::Size);
                }
                ChunkState::Trailers => {
                    let Some(eol) = memchr::memmem::find(rest, b"\r\n") else {
                        if rest.len() > MAX_HEAD {
                            break Err(CoreError::BadResponse(
                                "the provider's trailers are too large".to_owned(),
                            ));
                        }
                        break Ok(());
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        if pos < buf.len() {
                            self.keep_alive = false;
                        }
                        self.framing = Framing::Length(0);
                        self.finish();
                        break Ok(());
                    }
                }
            }
        };
        if self.phase != Phase::Done {
            self.buf = buf.get(pos..).unwrap_or_default().to_vec();
        }
        result
    }

    /// Body bytes, decoded: buffered, or tapped and queued for the client.
    /// Fails when an SSE event outgrows `max_event`.
    fn emit(&mut self, bytes: &[u8]) -> Result<(), CoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.buffering {
            self.body.extend_from_slice(bytes);
            if self.body.len() > self.max_buffered {
                // Too big to hold: hand the prefix out and stream the rest.
                self.buffering = false;
                self.phase = Phase::Streaming;
            }
            return Ok(());
        }
        if let Some(ev) = self.events.as_mut() {
            let whole = ev.feed(bytes);
            self.out.extend_from_slice(&whole);
            self.tokens = ev.usage;
            if ev.pending_len() > self.max_event {
                return Err(CoreError::BadResponse(format!(
                    "an SSE event from the provider exceeds {} bytes",
                    self.max_event
                )));
            }
            return Ok(());
        }
        match self.tap.as_mut() {
            Some(tap) => {
                match tap.feed(bytes) {
                    None => self.out.extend_from_slice(bytes),
                    Some(v) => self.out.extend_from_slice(&v),
                }
                if let Some(u) = tap.usage {
                    self.usage = Some(u);
                }
                if tap.pending_len() > self.max_event {
                    return Err(CoreError::BadResponse(format!(
                        "an SSE event from the provider exceeds {} bytes",
                        self.max_event
                    )));
                }
            }
            None => self.out.extend_from_slice(bytes),
        }
        Ok(())
    }

    /// The message is complete.
    fn finish(&mut self) {
        if let Some(ev) = self.events.as_mut() {
            let rest = ev.finish();
            self.out.extend_from_slice(&rest);
            self.tokens = ev.usage;
        } else if self.buffering && self.protocol != Protocol::Chat {
            self.tokens = body_tokens(self.protocol, &self.body);
        } else if let Some(tap) = self.tap.as_mut() {
            let rest = tap.finish();
            self.out.extend_from_slice(&rest);
            if let Some(u) = tap.usage {
                self.usage = Some(u);
            }
        } else if self.buffering {
            self.usage = body_usage(&self.body);
        }
        self.phase = Phase::Done;
    }

    /// Whether the whole body is in `body`.
    pub fn body_complete(&self) -> bool {
        self.phase == Phase::Done && self.buffering
    }
}

#[pymethods]
impl ResponseReader {
    /// A reader for one response. `max_buffered`: largest non-SSE body held
    /// whole; `strip_usage`: remove usage the gateway asked for from an SSE
    /// stream; `head_request`: the request was HEAD.
    /// `max_event`: largest SSE event held before the stream fails;
    /// `protocol`: `chat`, `responses` or `messages`.
    #[new]
    #[pyo3(signature = (max_buffered=64 << 20, strip_usage=false, head_request=false, max_event=DEFAULT_MAX_EVENT, protocol="chat"))]
    fn new(
        max_buffered: usize,
        strip_usage: bool,
        head_request: bool,
        max_event: usize,
        protocol: &str,
    ) -> PyResult<Self> {
        let p = Protocol::parse(protocol)
            .ok_or_else(|| CoreError::InvalidArgument(format!("unknown protocol {protocol:?}")))?;
        Ok(Self::create(max_buffered, strip_usage, head_request, max_event).with_protocol(p))
    }

    /// Feed received bytes; returns 0 (nothing to hand on yet), 1 (head
    /// known, body streaming) or 2 (message complete). Raises
    /// `UpstreamBadResponse` on a malformed response.
    fn feed(&mut self, data: &[u8]) -> PyResult<u8> {
        Ok(self.push(data)? as u8)
    }

    /// The provider closed the connection; returns the phase as `feed`
    /// does, or raises when the response was cut short.
    fn eof(&mut self) -> PyResult<u8> {
        Ok(self.close_input()? as u8)
    }

    /// Streamed bytes for the client that arrived since the last call, or
    /// None when there are none.
    fn take<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        if self.out.is_empty() {
            return None;
        }
        let b = PyBytes::new(py, &self.out);
        self.out.clear();
        Some(b)
    }

    /// 0 (nothing to hand on yet), 1 (streaming) or 2 (complete), as `feed`
    /// last returned.
    #[getter]
    fn phase(&self) -> u8 {
        self.phase as u8
    }

    /// Bytes waiting in `take` (for flow control).
    #[getter]
    fn pending(&self) -> usize {
        self.out.len()
    }

    /// Bytes received so far, head included.
    #[getter]
    fn received(&self) -> u64 {
        self.received
    }

    /// The body length the provider declared in `content-length`, None
    /// for a chunked or read-until-close body.
    #[getter]
    fn declared_length(&self) -> Option<u64> {
        self.declared_length
    }

    /// HTTP status (0 until the head arrived).
    #[getter]
    fn status(&self) -> u16 {
        self.status
    }

    /// Response headers for the client (hop-by-hop removed).
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    /// Whether the body is a server-sent-events stream.
    #[getter]
    fn is_sse(&self) -> bool {
        self.is_sse
    }

    /// Whether the connection may carry another request once this
    /// response is complete.
    #[getter]
    fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the whole message arrived.
    #[getter]
    fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The buffered body of a non-SSE response (or its prefix when it
    /// outgrew the cap), None for SSE.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        if self.is_sse {
            None
        } else {
            Some(PyBytes::new(py, &self.body))
        }
    }

    /// Whether `body` is the whole response body.
    #[getter(body_complete)]
    fn py_body_complete(&self) -> bool {
        self.body_complete()
    }

    /// Usage the provider reported: `(prompt, completion, cached)` or None.
    #[getter]
    fn usage(&self) -> Option<(Option<u64>, Option<u64>, u64)> {
        if self.protocol != Protocol::Chat {
            return self.tokens.map(|t| (t.prompt, t.completion, t.cached));
        }
        self.usage
            .map(|u| (u.prompt_tokens, u.completion_tokens, u.cached()))
    }

    /// Whether an SSE stream carried `data: [DONE]` (for Responses and
    /// Messages: the protocol's terminal event).
    #[getter]
    fn saw_done(&self) -> bool {
        self.tap.as_ref().is_some_and(|t| t.saw_done)
            || self.events.as_ref().is_some_and(|t| t.saw_end)
    }

    /// Cache-write and reasoning tokens the provider reported (Responses
    /// and Messages; None for chat or when no usage was reported).
    #[getter]
    fn usage_extra(&self) -> Option<(u64, u64)> {
        self.tokens.map(|t| (t.cache_write, t.reasoning))
    }

    /// What a completion estimate reads: the retained SSE deltas, or the
    /// buffered body, and which of the two it is.
    fn completion_source<'py>(&self, py: Python<'py>) -> (Bound<'py, PyBytes>, bool) {
        if let Some(ev) = self.events.as_ref() {
            return (PyBytes::new(py, ev.retained()), true);
        }
        match self.tap.as_ref() {
            Some(t) => (PyBytes::new(py, t.retained()), true),
            None => (PyBytes::new(py, &self.body), false),
        }
    }
}

/// Estimated `(prompt, completion)` tokens from the request body and what
/// the provider sent (`from_stream`: retained SSE deltas, else a JSON body).
/// Releases the GIL: meant to run on an executor thread.
#[pyfunction]
fn estimate_usage(
    py: Python<'_>,
    request_body: &[u8],
    model: &str,
    response: &[u8],
    from_stream: bool,
) -> (u64, u64) {
    py.detach(|| {
        let prompt = tokens::estimate_prompt(model, request_body);
        let completion = if from_stream {
            tokens::estimate_completion_from_choices(model, response)
        } else if response.is_empty() {
            0
        } else {
            tokens::estimate_completion_from_body(model, response)
        };
        (prompt, completion)
    })
}

/// Encode a request for the provider (see [`encode`]); `headers` are the
/// client's, rewritten for `auth_style` (`bearer`, `x-api-key`, `api-key`).
#[pyfunction]
#[pyo3(signature = (method, target, host, headers, body, auth_style="bearer"))]
fn encode_request<'py>(
    py: Python<'py>,
    method: &str,
    target: &str,
    host: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    auth_style: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let style = AuthStyle::parse(auth_style)
        .ok_or_else(|| CoreError::InvalidArgument(format!("unknown auth style {auth_style:?}")))?;
    let out = encode(method, target, host, &headers, body, style)?;
    Ok(PyBytes::new(py, &out))
}

/// Register the HTTP/1.1 codec on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ResponseReader>()?;
    m.add_function(wrap_pyfunction!(encode_request, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_usage, m)?)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::headers::tests::h;
    use proptest::prelude::*;

    #[test]
    fn encodes_a_request_and_drops_broken_headers() {
        let out = encode(
            "POST",
            "/v1/chat/completions",
            "api.example:8443",
            &h(&[
                ("Authorization", "Bearer sk-1"),
                ("x-evil", "a\r\nInjected: yes"),
                ("bad name", "v"),
                ("Content-Length", "999"),
                ("content-type", "application/json"),
            ]),
            b"{}",
            AuthStyle::Bearer,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/chat/completions HTTP/1.1\r\nhost: api.example:8443\r\n\
             Authorization: Bearer sk-1\r\ncontent-type: application/json\r\n\
             accept-encoding: identity\r\ncontent-length: 2\r\n\r\n{}"
        );
        assert!(encode("GE T", "/", "h", &[], b"", AuthStyle::Bearer).is_err());
        assert!(encode("GET", "/a b", "h", &[], b"", AuthStyle::Bearer).is_err());
        let get = encode("GET", "/v1/models", "h", &[], b"", AuthStyle::Bearer).unwrap();
        assert!(!String::from_utf8(get).unwrap().contains("content-length"));
    }

    fn read_all(parts: &[&[u8]]) -> ResponseReader {
        let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT);
        for p in parts {
            r.push(p).unwrap();
        }
        r
    }

    #[test]
    fn buffers_a_content_length_body_and_reads_usage() {
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: r1\r\n\r\n",
            body.len()
        );
        let r = read_all(&[head.as_bytes(), &body[..10], &body[10..]]);
        assert_eq!(r.phase, Phase::Done);
        assert!(r.body_complete() && r.keep_alive);
        assert_eq!(r.body, body.to_vec());
        assert_eq!(r.usage.unwrap().prompt_tokens, Some(3));
        assert_eq!(
            r.headers,
            h(&[("Content-Type", "application/json"), ("X-Request-Id", "r1")])
        );
    }

    #[test]
    fn chunked_sse_is_tapped_and_ends_at_the_last_chunk() {
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n\
                      data: [DONE]\n\n";
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for piece in events.as_bytes().chunks(17) {
            wire.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            wire.extend_from_slice(piece);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        // Any split of the wire gives the same result.
        for split in [1usize, 3, 7, 64, wire.len()] {
            let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT);
            let mut out = Vec::new();
            for part in wire.chunks(split) {
                r.push(part).unwrap();
                out.append(&mut r.out);
            }
            assert_eq!(r.phase, Phase::Done, "split {split}");
            assert!(r.is_sse && r.keep_alive);
            assert_eq!(String::from_utf8(out).unwrap(), events);
            assert_eq!(r.usage.unwrap().completion_tokens, Some(1));
        }
    }

    #[test]
    fn protocol_readers_pass_bytes_and_read_normalised_usage() {
        let events = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":3,\"cache_creation_input_tokens\":2,\"output_tokens\":1}}}\n\n\
                      event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n\
                      event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
            events.len()
        );
        let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT)
            .with_protocol(Protocol::Messages);
        r.push(head.as_bytes()).unwrap();
        for piece in events.as_bytes().chunks(7) {
            r.push(piece).unwrap();
        }
        assert_eq!(r.phase, Phase::Done);
        assert_eq!(r.out, events.as_bytes());
        let t = r.tokens.unwrap();
        assert_eq!(
            (t.prompt, t.completion, t.cached, t.cache_write),
            (Some(10), Some(4), 3, 2)
        );
        assert!(r.events.as_ref().unwrap().saw_end);

        let body = br#"{"object":"response","usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"output_tokens_details":{"reasoning_tokens":2}}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT)
            .with_protocol(Protocol::Responses);
        r.push(head.as_bytes()).unwrap();
        r.push(body).unwrap();
        assert!(r.body_complete());
        let t = r.tokens.unwrap();
        assert_eq!(
            (t.prompt, t.completion, t.cached, t.reasoning),
            (Some(9), Some(3), 4, 2)
        );
    }

    #[test]
    fn read_until_close_and_cut_short_bodies() {
        let mut r = read_all(&[b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nabc"]);
        assert_eq!(r.phase, Phase::Pending);
        assert_eq!(r.close_input().unwrap(), Phase::Done);
        assert_eq!(r.body, b"abc");
        assert!(!r.keep_alive);

        let mut r = read_all(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]);
        assert!(r.close_input().is_err());
        let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT);
        assert!(r.close_input().is_err());
    }

    #[test]
    fn interim_and_bodyless_responses() {
        let r = read_all(&[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"]);
        assert_eq!((r.status, r.phase), (204, Phase::Done));
        let mut r = ResponseReader::create(1 << 20, false, true, DEFAULT_MAX_EVENT);
        r.push(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(r.phase, Phase::Done);
    }

    #[test]
    fn large_bodies_stream_past_the_cap() {
        let mut r = ResponseReader::create(4, false, false, DEFAULT_MAX_EVENT);
        r.push(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456")
            .unwrap();
        assert_eq!(r.phase, Phase::Streaming);
        assert_eq!(r.body, b"0123456");
        r.push(b"789").unwrap();
        assert_eq!(r.phase, Phase::Done);
        assert!(!r.body_complete());
        assert_eq!(r.out, b"789");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b"HTTP/1.1 2x0 OK\r\n\r\n"[..],
            b"HTTP/1.1 000 X\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 099 X\r\n\r\n",
            b"HTTP/1.1 600 X\r\n\r\n",
            b"HTTP/1.1 999 X\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nabc",
        ] {
            let mut r = ResponseReader::create(1 << 20, false, false, DEFAULT_MAX_EVENT);
            assert!(r.push(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_sse_event_past_the_cap_fails_the_stream() {
        for strip in [false, true] {
            let mut r = ResponseReader::create(1 << 20, strip, false, 1000);
            r.push(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ok\n\n")
                .unwrap();
            let mut line = b"data: ".to_vec();
            line.extend_from_slice(&[b'x'; 900]);
            r.push(&line).unwrap();
            let err = r.push(&[b'x'; 200]).unwrap_err();
            assert!(err.message().contains("exceeds 1000 bytes"), "{err}");
        }
        // Many small events stay well under the cap.
        let mut r = ResponseReader::create(1 << 20, false, false, 100);
        r.push(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
            .unwrap();
        for _ in 0..1000 {
            r.push(b"data: {\"a\":1}\n\n").unwrap();
        }
    }

    #[test]
    fn declared_length_is_known_only_for_content_length_bodies() {
        let r = read_all(&[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]);
        assert_eq!(r.declared_length, Some(10));
        let r = read_all(&[b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]);
        assert_eq!(r.declared_length, None);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut r = ResponseReader::create(128, true, false, 256);
            let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n".to_vec();
            for p in &parts { wire.extend_from_slice(p); }
            for piece in wire.chunks(5) {
                if r.push(piece).is_err() { break; }
            }
            let _ = r.close_input();
        }
    }
}
