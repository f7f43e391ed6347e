//! Python exception types raised by the extension, and the single mapping from
//! Rust errors to them.
//!
//! ```text
//! LectrCoreError
//!  ├── InvalidBody            the request body is not usable JSON
//!  └── UpstreamError          anything that went wrong talking to a provider
//!       ├── UpstreamConnectError   no connection could be made
//!       ├── UpstreamTimeout        connect, first-byte or idle timeout
//!       └── UpstreamProtocolError  the connection broke or spoke nonsense
//! ```

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _core,
    LectrCoreError,
    PyException,
    "Base class of every error raised by lectr._core."
);
create_exception!(
    _core,
    InvalidBody,
    LectrCoreError,
    "The request body is not a JSON object of the expected shape."
);
create_exception!(
    _core,
    UpstreamError,
    LectrCoreError,
    "A provider could not be reached or its response broke."
);
create_exception!(
    _core,
    UpstreamConnectError,
    UpstreamError,
    "No connection to the provider could be established."
);
create_exception!(
    _core,
    UpstreamTimeout,
    UpstreamError,
    "The provider did not answer within a timeout."
);
create_exception!(
    _core,
    UpstreamProtocolError,
    UpstreamError,
    "The provider connection broke or returned an invalid response."
);

/// What can go wrong on the upstream side, before it becomes a Python error.
#[derive(Debug)]
pub enum UpstreamFailure {
    /// TCP/TLS connection could not be made.
    Connect(String),
    /// A timeout elapsed; the string names which one.
    Timeout(&'static str),
    /// The connection broke or the response was malformed.
    Protocol(String),
}

impl UpstreamFailure {
    /// Classify a reqwest error. The message never contains request headers,
    /// so no credential can leak through it.
    pub fn from_reqwest(err: &reqwest::Error) -> Self {
        let msg = describe(err);
        if err.is_connect() {
            UpstreamFailure::Connect(msg)
        } else if err.is_timeout() {
            UpstreamFailure::Timeout("connect")
        } else {
            UpstreamFailure::Protocol(msg)
        }
    }
}

/// The reqwest error chain without the URL (which may carry an Azure resource
/// name but never a key) condensed to one line.
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = err.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        "upstream request failed".to_owned()
    } else {
        parts.join(": ")
    }
}

impl From<UpstreamFailure> for PyErr {
    fn from(f: UpstreamFailure) -> Self {
        match f {
            UpstreamFailure::Connect(m) => UpstreamConnectError::new_err(m),
            UpstreamFailure::Timeout(which) => UpstreamTimeout::new_err(which),
            UpstreamFailure::Protocol(m) => UpstreamProtocolError::new_err(m),
        }
    }
}

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LectrCoreError", py.get_type::<LectrCoreError>())?;
    m.add("InvalidBody", py.get_type::<InvalidBody>())?;
    m.add("UpstreamError", py.get_type::<UpstreamError>())?;
    m.add(
        "UpstreamConnectError",
        py.get_type::<UpstreamConnectError>(),
    )?;
    m.add("UpstreamTimeout", py.get_type::<UpstreamTimeout>())?;
    m.add(
        "UpstreamProtocolError",
        py.get_type::<UpstreamProtocolError>(),
    )?;
    Ok(())
}
