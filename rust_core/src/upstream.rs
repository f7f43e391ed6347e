//! The upstream HTTP client (pooled keep-alive connections, rustls) and the
//! response object handed to Python: status and headers first, then either a
//! fully read JSON body or SSE chunks as they arrive, tapped for usage.

use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex, Once};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::errors::UpstreamFailure;
use crate::headers::{AuthStyle, client_response_headers, upstream_request_headers};
use crate::tokens;
use crate::usage::{StreamTap, Usage, body_usage};

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

static CRYPTO: Once = Once::new();

/// Start the tokio runtime the upstream client runs on. Its worker count is
/// `LECTR_CORE_THREADS` (default 1: on small machines one I/O thread beside
/// the Python event loop is faster than several contending for the GIL).
fn init_runtime() {
    CRYPTO.call_once(|| {
        // Errors only if a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let threads = std::env::var("LECTR_CORE_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads)
            .enable_all()
            .thread_name("lectr-io");
        pyo3_async_runtimes::tokio::init(builder);
    });
}

/// A pooled HTTP client for provider calls.
#[pyclass(frozen, module = "lectr._core")]
pub struct Upstream {
    client: reqwest::Client,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    max_buffered_body: usize,
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::from_secs(60))
}

#[pymethods]
impl Upstream {
    /// Build a client. Timeouts are in seconds.
    #[new]
    #[pyo3(signature = (connect_timeout=5.0, first_byte_timeout=120.0, idle_timeout=120.0, pool_idle_timeout=90.0, pool_max_idle_per_host=512, max_buffered_body=64 << 20))]
    fn new(
        connect_timeout: f64,
        first_byte_timeout: f64,
        idle_timeout: f64,
        pool_idle_timeout: f64,
        pool_max_idle_per_host: usize,
        max_buffered_body: usize,
    ) -> PyResult<Self> {
        init_runtime();
        let client = reqwest::Client::builder()
            .connect_timeout(secs(connect_timeout))
            .pool_idle_timeout(secs(pool_idle_timeout))
            .pool_max_idle_per_host(pool_max_idle_per_host)
            .tcp_nodelay(true)
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(|e| UpstreamFailure::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Upstream {
            client,
            first_byte_timeout: secs(first_byte_timeout),
            idle_timeout: secs(idle_timeout),
            max_buffered_body,
        })
    }

    /// Send a request; the awaitable resolves once the response headers have
    /// arrived (and, for a non-SSE response, its whole body).
    ///
    /// `headers` are the client's; hop-by-hop, `X-Lectr-*` and
    /// `accept-encoding` are dropped and `authorization` is rewritten for
    /// `auth_style` (`bearer`, `x-api-key` or `api-key`). With `strip_usage`,
    /// usage the gateway asked for on the client's behalf is removed from an
    /// SSE stream.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (method, url, headers, body, auth_style="bearer", strip_usage=false))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        url: String,
        headers: Vec<(String, String)>,
        body: PyBackedBytes,
        auth_style: &str,
        strip_usage: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let style = AuthStyle::parse(auth_style).ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!("unknown auth style {auth_style:?}"))
        })?;
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| pyo3::exceptions::PyValueError::new_err("invalid HTTP method"))?;
        let mut map = reqwest::header::HeaderMap::with_capacity(headers.len() + 2);
        for (n, v) in upstream_request_headers(&headers, style) {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(n.as_bytes()),
                reqwest::header::HeaderValue::from_str(&v),
            ) {
                map.append(n, v);
            }
        }
        let request = self
            .client
            .request(method, url)
            .headers(map)
            .body(Bytes::from_owner(body));
        let first_byte = self.first_byte_timeout;
        let idle = self.idle_timeout;
        let max_buffered = self.max_buffered_body;
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let resp = match tokio::time::timeout(first_byte, request.send()).await {
                Err(_) => return Err(UpstreamFailure::Timeout("first_byte").into()),
                Ok(Err(e)) => return Err(UpstreamFailure::from_reqwest(&e).into()),
                Ok(Ok(r)) => r,
            };
            let status = resp.status().as_u16();
            let pairs: Vec<(&str, &[u8])> = resp
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
                .collect();
            let headers = client_response_headers(&pairs);
            let is_sse = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("text/event-stream")
                });
            let mut stream: BodyStream = Box::pin(resp.bytes_stream());
            let mut body = None;
            let mut usage = None;
            if !is_sse {
                let mut buf: Vec<u8> = Vec::new();
                let mut complete = false;
                while buf.len() <= max_buffered {
                    match next_with_timeout(&mut stream, idle).await? {
                        Some(chunk) => buf.extend_from_slice(&chunk),
                        None => {
                            complete = true;
                            break;
                        }
                    }
                }
                if complete {
                    usage = body_usage(&buf);
                }
                body = Some((Bytes::from(buf), complete));
            }
            let complete = body.as_ref().is_some_and(|(_, c)| *c);
            Ok(UpstreamResponse {
                status,
                headers,
                is_sse,
                body: body.map(|(b, _)| b),
                body_complete: complete,
                state: Arc::new(Mutex::new(BodyState {
                    stream: if complete { None } else { Some(stream) },
                    tap: if is_sse {
                        Some(StreamTap::new(strip_usage))
                    } else {
                        None
                    },
                    finished: complete,
                    closed_early: false,
                })),
                usage: Arc::new(StdMutex::new(usage)),
                cancel: CancellationToken::new(),
                idle_timeout: idle,
            })
        })
    }
}

async fn next_with_timeout(
    stream: &mut BodyStream,
    idle: Duration,
) -> Result<Option<Bytes>, UpstreamFailure> {
    match tokio::time::timeout(idle, stream.next()).await {
        Err(_) => Err(UpstreamFailure::Timeout("idle")),
        Ok(None) => Ok(None),
        Ok(Some(Err(e))) => Err(UpstreamFailure::Protocol(describe_body_error(&e))),
        Ok(Some(Ok(b))) => Ok(Some(b)),
    }
}

fn describe_body_error(e: &reqwest::Error) -> String {
    match UpstreamFailure::from_reqwest(e) {
        UpstreamFailure::Connect(m) | UpstreamFailure::Protocol(m) => {
            format!("response body broke: {m}")
        }
        UpstreamFailure::Timeout(w) => format!("response body timed out ({w})"),
    }
}

struct BodyState {
    stream: Option<BodyStream>,
    tap: Option<StreamTap>,
    finished: bool,
    /// `close` ended the body before the provider did.
    closed_early: bool,
}

/// A provider's response as it arrives.
#[pyclass(frozen, module = "lectr._core")]
pub struct UpstreamResponse {
    /// HTTP status from the provider.
    #[pyo3(get)]
    status: u16,
    headers: Vec<(String, String)>,
    /// Whether the body is a server-sent-events stream.
    #[pyo3(get)]
    is_sse: bool,
    body: Option<Bytes>,
    /// Whether `body` holds the whole response (non-SSE, within the cap).
    #[pyo3(get)]
    body_complete: bool,
    state: Arc<Mutex<BodyState>>,
    usage: Arc<StdMutex<Option<Usage>>>,
    cancel: CancellationToken,
    idle_timeout: Duration,
}

/// Bytes converted to a Python `bytes` object once the future completes.
struct Chunk(Bytes);

impl<'py> IntoPyObject<'py> for Chunk {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

#[pymethods]
impl UpstreamResponse {
    /// Response headers for the client (hop-by-hop removed).
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.headers.clone()
    }

    /// The buffered body of a non-SSE response (the prefix, if it exceeded
    /// the buffer cap and the rest must be read with `next_chunk`).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.body.as_ref().map(|b| PyBytes::new(py, b))
    }

    /// Awaitable of the next chunk to give the client, or `None` at the end
    /// of the body (or once `close` was called).
    fn next_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = Arc::clone(&self.state);
        let cancel = self.cancel.clone();
        let idle = self.idle_timeout;
        let usage_slot = Arc::clone(&self.usage);
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let mut st = state.lock().await;
            loop {
                if st.finished {
                    return Ok(None);
                }
                let Some(stream) = st.stream.as_mut() else {
                    st.finished = true;
                    return Ok(None);
                };
                let next = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        // Dropping the body closes the upstream connection.
                        st.stream = None;
                        st.finished = true;
                        st.closed_early = true;
                        return Ok(None);
                    }
                    r = next_with_timeout(stream, idle) => r,
                };
                let chunk = match next {
                    Ok(c) => c,
                    Err(e) => {
                        st.stream = None;
                        st.finished = true;
                        return Err(e.into());
                    }
                };
                let Some(chunk) = chunk else {
                    st.stream = None;
                    st.finished = true;
                    let rest = st.tap.as_mut().map(StreamTap::finish).unwrap_or_default();
                    publish_usage(&st, &usage_slot);
                    return Ok(if rest.is_empty() {
                        None
                    } else {
                        Some(Chunk(Bytes::from(rest)))
                    });
                };
                let Some(tap) = st.tap.as_mut() else {
                    return Ok(Some(Chunk(chunk)));
                };
                let out = tap.feed(&chunk);
                publish_usage(&st, &usage_slot);
                match out {
                    None => return Ok(Some(Chunk(chunk))),
                    Some(v) if !v.is_empty() => return Ok(Some(Chunk(Bytes::from(v)))),
                    // Everything so far was held back or dropped: read on.
                    Some(_) => continue,
                }
            }
        })
    }

    /// Stop reading and close the upstream connection.
    fn close(&self) {
        self.cancel.cancel();
    }

    /// Usage the provider reported: `(prompt, completion, cached)` or `None`.
    #[getter]
    fn usage(&self) -> Option<(Option<u64>, Option<u64>, u64)> {
        let u = self.usage.lock().ok()?.as_ref().copied()?;
        Some((u.prompt_tokens, u.completion_tokens, u.cached()))
    }

    /// Whether `close` ended the body before the provider finished it.
    #[getter]
    fn closed_early(&self) -> bool {
        self.state
            .try_lock()
            .map(|s| s.closed_early)
            .unwrap_or(false)
    }

    /// Whether an SSE stream ended with `data: [DONE]`.
    #[getter]
    fn saw_done(&self) -> bool {
        self.state
            .try_lock()
            .ok()
            .and_then(|s| s.tap.as_ref().map(|t| t.saw_done))
            .unwrap_or(false)
    }

    /// Awaitable of estimated `(prompt, completion)` tokens, counted off the
    /// event loop from the request body and what the provider sent so far.
    fn estimate_usage<'py>(
        &self,
        py: Python<'py>,
        request_body: PyBackedBytes,
        model: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        let state = Arc::clone(&self.state);
        let body = self.body.clone();
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let retained = {
                let st = state.lock().await;
                st.tap.as_ref().map(|t| t.retained().to_vec())
            };
            let counted = tokio::task::spawn_blocking(move || {
                let prompt = tokens::estimate_prompt(&model, &request_body);
                let completion = match (&retained, &body) {
                    (Some(r), _) => tokens::estimate_completion_from_choices(&model, r),
                    (None, Some(b)) => tokens::estimate_completion_from_body(&model, b),
                    (None, None) => 0,
                };
                (prompt, completion)
            })
            .await
            .map_err(|e| UpstreamFailure::Protocol(format!("token estimation failed: {e}")))?;
            Ok(counted)
        })
    }
}

/// Copy the tap's usage where the synchronous `usage` getter can read it.
fn publish_usage(st: &BodyState, slot: &StdMutex<Option<Usage>>) {
    if let Some(u) = st.tap.as_ref().and_then(|t| t.usage) {
        if let Ok(mut g) = slot.lock() {
            *g = Some(u);
        }
    }
}

/// Register the upstream classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Upstream>()?;
    m.add_class::<UpstreamResponse>()?;
    Ok(())
}
