//! `lectr._core`: the byte-level hot path of the Lectr gateway.
//!
//! This file is a table of contents. Each concern lives in its own module:
//!
//! - [`decide`] and [`plan`]: the per-request decisions (key → org, provider
//!   detection, routing rules, failover path, URLs) over tables compiled
//!   when the control snapshot changes, in one call per request.
//! - [`request`]: peek `model` / `stream` / `stream_options` from a request body
//!   without decoding the messages, and rewrite `model` and
//!   `stream_options.include_usage` leaving every other byte alone.
//! - [`headers`]: which request and response headers cross the proxy, and the
//!   per-provider auth rewrite.
//! - [`sse`]: a server-sent-events framer that is correct for any split of the
//!   byte stream.
//! - [`usage`]: usage extraction from JSON bodies and SSE events, and stripping
//!   of the usage artefacts a client did not ask for.
//! - [`protocols`]: the usage taps of the OpenAI Responses and Anthropic
//!   Messages streams and bodies.
//! - [`tokens`]: offline BPE token counting when a provider reports no usage.
//! - [`h1`]: HTTP/1.1 to the provider without I/O: the request encoder and
//!   the response reader the event loop feeds (chunked, SSE tap, usage).
//! - [`errors`]: `CoreError`, which every fallible function returns, and its
//!   one conversion into the Python exception types.
//!
//! No policy state, no database, no sockets and no Python callbacks live here:
//! Python orchestrates, keeps the policy state that needs Redis and does the
//! I/O; Rust handles the bytes and the per-request decisions.

pub mod decide;
pub mod errors;
pub mod h1;
pub mod headers;
pub mod plan;
pub mod protocols;
pub mod request;
pub mod sse;
pub mod tokens;
pub mod usage;

use pyo3::prelude::*;

/// The Python module `lectr._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    plan::register(m)?;
    tokens::register(m)?;
    h1::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Benchmarks report which build they measured.
    m.add(
        "BUILD_PROFILE",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    )?;
    Ok(())
}
