"""The one error tree of the gateway; each error knows its HTTP status, OpenAI
error `type` and `code`, and the category and source recorded for it.

```
LectrError                          (status, type, code, source)
 ├── MissingKey                     401 authentication_error missing_lectr_key
 ├── InvalidKey                     401 authentication_error invalid_lectr_key
 ├── OrgDisabled                    401 authentication_error org_disabled
 ├── InvalidRequest                 400 invalid_request_error invalid_request
 ├── InvalidProvider                400 invalid_request_error invalid_provider
 ├── AzureConfigMissing             400 invalid_request_error azure_config_missing
 ├── UnsupportedEndpoint            400 invalid_request_error unsupported_endpoint
 ├── RequestTooLarge                413 invalid_request_error request_too_large
 ├── ClientClosed                   499 invalid_request_error client_closed  (client left mid-body)
 ├── NotFound                       404 invalid_request_error not_found
 ├── MethodNotAllowed               405 invalid_request_error method_not_allowed
 ├── AdminAuthRequired              401 authentication_error admin_auth_required
 ├── MetricsAuthRequired            401 authentication_error metrics_auth_required
 ├── Forbidden                      403 permission_error forbidden
 ├── Conflict                       409 invalid_request_error conflict
 ├── RateLimited                    429 rate_limit_error rate_limit_exceeded  (+ Retry-After)
 │    └── StreamsExceeded           429 rate_limit_error concurrent_streams_exceeded
 ├── BudgetExceeded                 429 rate_limit_error budget_exceeded
 ├── PolicyUnavailable              503 api_error policy_unavailable  (fail-closed, Redis down)
 ├── ProviderUnreachable            502 api_error provider_unreachable   (network)
 ├── ProviderBadResponse            502 api_error provider_bad_response  (provider: not valid HTTP)
 ├── StreamInterrupted              --- api_error stream_interrupted     (SSE error event, after the head)
 └── ProviderTimeout                504 api_error provider_timeout       (network)
```

`from_core` is the single table that maps `lectr._core`'s upstream exceptions
onto it, `refused` the one for the refusals of its decisions (`Refused`).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from lectr import _core


class _Detail(msgspec.Struct):
    message: str
    type: str
    code: str
    param: str | None = None


class _Envelope(msgspec.Struct):
    error: _Detail


_encode = msgspec.json.Encoder().encode


class LectrError(Exception):
    """An error the gateway itself answers with, in the OpenAI error shape."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"
    source: ClassVar[str] = "proxy"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        """The JSON body sent to the client."""
        return _encode(_Envelope(_Detail(self.message, self.type, self.code)))

    def headers(self) -> list[tuple[str, str]]:
        """Extra response headers (e.g. Retry-After)."""
        return []

    @property
    def category(self) -> str:
        """The error category stored on the request record."""
        return self.code


class MissingKey(LectrError):
    status, type, code = 401, "authentication_error", "missing_lectr_key"


class InvalidKey(LectrError):
    status, type, code = 401, "authentication_error", "invalid_lectr_key"


class OrgDisabled(LectrError):
    status, type, code = 401, "authentication_error", "org_disabled"


class InvalidRequest(LectrError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class InvalidProvider(LectrError):
    status, type, code = 400, "invalid_request_error", "invalid_provider"


class AzureConfigMissing(LectrError):
    status, type, code = 400, "invalid_request_error", "azure_config_missing"


class UnsupportedEndpoint(LectrError):
    status, type, code = 400, "invalid_request_error", "unsupported_endpoint"


class RequestTooLarge(LectrError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class ClientClosed(LectrError):
    """The client hung up before its request body was complete; recorded as
    499 like a stream the client abandoned (nobody is left to read an answer)."""

    status, type, code, source = 499, "invalid_request_error", "client_closed", "client"


class NotFound(LectrError):
    status, type, code = 404, "invalid_request_error", "not_found"


class MethodNotAllowed(LectrError):
    status, type, code = 405, "invalid_request_error", "method_not_allowed"


class AdminAuthRequired(LectrError):
    status, type, code = 401, "authentication_error", "admin_auth_required"


class MetricsAuthRequired(LectrError):
    status, type, code = 401, "authentication_error", "metrics_auth_required"


class Forbidden(LectrError):
    status, type, code = 403, "permission_error", "forbidden"


class Conflict(LectrError):
    status, type, code = 409, "invalid_request_error", "conflict"


class RateLimited(LectrError):
    status, type, code = 429, "rate_limit_error", "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, -(-retry_after_ms // 1000))

    def headers(self) -> list[tuple[str, str]]:
        return [("retry-after", str(self.retry_after))]


class StreamsExceeded(RateLimited):
    code = "concurrent_streams_exceeded"


class BudgetExceeded(LectrError):
    status, type, code = 429, "rate_limit_error", "budget_exceeded"


class PolicyUnavailable(LectrError):
    status, type, code = 503, "api_error", "policy_unavailable"


class ProviderUnreachable(LectrError):
    status, type, code, source = 502, "api_error", "provider_unreachable", "network"


class ProviderBadResponse(LectrError):
    status, type, code, source = 502, "api_error", "provider_bad_response", "provider"


class StreamInterrupted(LectrError):
    """Sent as the last SSE event of a stream the provider broke off (the
    status, 200, is already with the client)."""

    status, type, code, source = 502, "api_error", "stream_interrupted", "network"


class ProviderTimeout(LectrError):
    status, type, code, source = 504, "api_error", "provider_timeout", "network"


def from_core(exc: _core.UpstreamError, provider: str) -> LectrError:
    """Translate an upstream failure from the Rust core (the only mapping)."""
    if isinstance(exc, _core.UpstreamTimeout):
        return ProviderTimeout(f"{provider} did not respond in time ({exc} timeout)")
    if isinstance(exc, _core.UpstreamBadResponse):
        return ProviderBadResponse(f"{provider} sent an invalid response: {exc}")
    if isinstance(exc, _core.UpstreamConnectError):
        return ProviderUnreachable(f"could not connect to {provider}: {exc}")
    return ProviderUnreachable(f"the connection to {provider} failed: {exc}")


# The errors the Rust core's decisions refuse a request with, by code.
_REFUSALS: dict[str, type[LectrError]] = {
    c.code: c
    for c in (
        MissingKey,
        InvalidKey,
        OrgDisabled,
        InvalidRequest,
        InvalidProvider,
        AzureConfigMissing,
        UnsupportedEndpoint,
    )
}


def refused(e: _core.Refused) -> LectrError:
    """The gateway error for a refusal of the Rust core's decisions
    (`_core.Refused(code, message, ...)`)."""
    code, message = e.args[0], e.args[1]
    return _REFUSALS.get(code, LectrError)(message)
