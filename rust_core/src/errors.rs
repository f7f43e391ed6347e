//! The Python exception types of the extension (the upstream ones are raised
//! by the Python HTTP client too, so callers catch one family).
//!
//! ```text
//! LectrCoreError
//!  ├── InvalidBody            the request body is not usable JSON
//!  └── UpstreamError          anything that went wrong talking to a provider
//!       ├── UpstreamConnectError   no connection could be made
//!       ├── UpstreamTimeout        connect, first-byte or idle timeout
//!       └── UpstreamProtocolError  the connection broke or spoke nonsense
//!            └── UpstreamBadResponse    what the provider sent is not valid HTTP
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
