//! `lectr._core`: the byte-level hot path of the Lectr gateway.
//!
//! This file is a table of contents. Each concern lives in its own module:
//!
//! - [`request`]: peek `model` / `stream` / `stream_options` from a request body
//!   without decoding the messages, and rewrite `model` and
//!   `stream_options.include_usage` leaving every other byte alone.
//! - [`headers`]: which request and response headers cross the proxy, and the
//!   per-provider auth rewrite.
//! - [`sse`]: a server-sent-events framer that is correct for any split of the
//!   byte stream.
//! - [`usage`]: usage extraction from JSON bodies and SSE events, and stripping
//!   of the usage artefacts a client did not ask for.
//! - [`tokens`]: offline BPE token counting when a provider reports no usage.
//! - [`upstream`]: the pooled HTTP client and the streaming response handed to
//!   Python.
//! - [`errors`]: the Python exception types and the one place Rust errors
//!   become them.
//!
//! No policy, no database and no Python callbacks live here: Python decides,
//! Rust moves bytes.

pub mod errors;
pub mod headers;
pub mod request;
pub mod sse;
pub mod tokens;
pub mod upstream;
pub mod usage;

use pyo3::prelude::*;

/// The Python module `lectr._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    request::register(m)?;
    tokens::register(m)?;
    upstream::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
