//! The extension's errors: `CoreError`, which every fallible pure function
//! returns, and its one conversion into the Python exception types below
//! (the upstream ones are raised by the Python HTTP client too, so callers
//! catch one family).
//!
//! ```text
//! LectrCoreError
//!  ├── InvalidBody            the request body is not usable JSON
//!  ├── Refused                a request the gateway answers itself: (code, message)
//!  └── UpstreamError          anything that went wrong talking to a provider
//!       ├── UpstreamConnectError   no connection could be made
//!       ├── UpstreamTimeout        connect, first-byte or idle timeout
//!       └── UpstreamProtocolError  the connection broke or spoke nonsense
//!            └── UpstreamBadResponse    what the provider sent is not valid HTTP
//! ```

use std::fmt;

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

/// A failure of the extension's own code, as a message fit for the client
/// (or the operator), and which Python exception it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// The request body is not usable JSON (`InvalidBody`).
    InvalidBody(String),
    /// What the provider sent is not valid HTTP, or an SSE event outgrew
    /// its cap (`UpstreamBadResponse`).
    BadResponse(String),
    /// The provider's response was cut short (`UpstreamProtocolError`).
    Truncated(String),
    /// An argument the caller should never pass (`ValueError`).
    InvalidArgument(String),
}

impl CoreError {
    /// The message, whatever the kind.
    pub fn message(&self) -> &str {
        match self {
            CoreError::InvalidBody(m)
            | CoreError::BadResponse(m)
            | CoreError::Truncated(m)
            | CoreError::InvalidArgument(m) => m,
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for CoreError {}

/// The one mapping of the extension's errors onto Python exceptions.
impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e {
            CoreError::InvalidBody(m) => InvalidBody::new_err(m),
            CoreError::BadResponse(m) => UpstreamBadResponse::new_err(m),
            CoreError::Truncated(m) => UpstreamProtocolError::new_err(m),
            CoreError::InvalidArgument(m) => PyValueError::new_err(m),
        }
    }
}

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
    Refused,
    LectrCoreError,
    "A request the gateway answers itself; args are (error code, message, model, provider)."
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

create_exception!(
    _core,
    UpstreamBadResponse,
    UpstreamProtocolError,
    "The provider's response is malformed (status, head, framing or an SSE event too large)."
);

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("LectrCoreError", py.get_type::<LectrCoreError>())?;
    m.add("InvalidBody", py.get_type::<InvalidBody>())?;
    m.add("Refused", py.get_type::<Refused>())?;
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
    m.add("UpstreamBadResponse", py.get_type::<UpstreamBadResponse>())?;
    Ok(())
}
