"""ProxyError tree -> OpenAI-shaped error JSON, and the Starlette exception handlers."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("meterline")

# Per-request values live in the ASGI scope under these keys (cheaper than `request.state`,
# which builds a State wrapper on first use and goes through __getattr__ on every read):
# the header dict (proxy.gateway.requests.header_map), the request id, and the Call being served.
HEADERS_KEY = "meterline.headers"
REQUEST_ID_KEY = "meterline.request_id"
CLIENT_REQUEST_ID_KEY = "meterline.client_request_id"
CALL_KEY = "meterline.call"


class ProxyError(Exception):
    """An error the client sees, in OpenAI's shape: {"error": {message, type, param, code}}."""

    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ProxyError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ClientClosedRequest(ProxyError):
    """The client hung up before its request arrived (nginx's 499): nobody reads this answer,
    and it is the client's failure, not the proxy's."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(ProxyError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class InsufficientQuota(ProxyError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ServiceUnavailable(ProxyError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamUnavailable(ProxyError):
    status = 502
    type = "api_error"
    code = "upstream_unavailable"


class UpstreamCredentialRefused(ProxyError):
    """The provider answered 401/403 to the proxy's own credential for it: the caller's key is
    fine, so no 401 (an SDK would report an invalid API key). Never carries the credential, nor
    the provider's body (OpenAI's names part of the key)."""

    status = 502
    type = "api_error"
    code = "upstream_credential_refused"

    def __init__(self, provider: str, upstream_status: int) -> None:
        super().__init__(
            f"The provider '{provider}' refused the proxy's credential for it (HTTP "
            f"{upstream_status}). Your API key is fine: the proxy's operator must fix the "
            "provider key.")


class UpstreamTimeout(ProxyError):
    status = 504
    type = "timeout"
    code = "timeout"


class UpstreamHTTPError(ProxyError):
    """The upstream answered with an error status; its body is passed through when it is usable."""

    type = "api_error"
    code = "upstream_error"

    def __init__(self, status: int, body: bytes, retry_after: float | None = None) -> None:
        super().__init__(f"upstream returned HTTP {status}")
        self.status = status
        self.body = body
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500

    def to_bytes(self) -> bytes:
        try:
            parsed = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return self.body
        return super().to_bytes()


def error_response(exc: ProxyError, extra_headers: dict[str, str] | None = None) -> Response:
    headers = {**exc.headers, **(extra_headers or {})}
    return Response(exc.to_bytes(), exc.status, headers, media_type="application/json")


def sse_error_event(exc: ProxyError) -> bytes:
    """The final event of a stream that failed after its first byte: the status can't change."""
    return b"data: " + orjson.dumps(ProxyError.to_dict(exc)) + b"\n\ndata: [DONE]\n\n"


async def handle_proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    rid = request.scope.get(REQUEST_ID_KEY)
    count_error(request, exc.status)
    call = request.scope.get(CALL_KEY)
    # a failed call still says who it was charged to and how it was routed
    headers = dict(call.headers) if call is not None else {}
    if rid:
        headers.update(request_id_headers(rid, request.scope.get(CLIENT_REQUEST_ID_KEY)))
    return error_response(exc, headers)


def request_id_headers(request_id: str, client_request_id: str | None) -> dict[str, str]:
    """`x-meterline-request-id` is the server's id (feedback and cache reports name it);
    `x-request-id` echoes the client's own id when it sent one, else the server's."""
    return {"x-request-id": client_request_id or request_id, "x-meterline-request-id": request_id}


def count_error(request: Request, status: int) -> None:
    """Failed requests count in meterline_requests_total too (labels stay bounded)."""
    services = getattr(request.app.state, "services", None)
    if services is None:
        return
    call = request.scope.get(CALL_KEY)
    model = call.body.get("model") if call is not None else None
    department = (call.department_name or None) if call is not None else None
    elapsed = call.elapsed() if call is not None else 0.0
    services.metrics.record_request(request.url.path, model if isinstance(model, str) else None,
                                    department, status, elapsed)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    count_error(request, exc.status_code)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"Method {request.method} not allowed"))
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown path: {request.url.path}"))
    err = ProxyError(str(exc.detail))
    err.status = exc.status_code
    return error_response(err)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    count_error(request, 500)
    return error_response(ProxyError("Internal error in the proxy", code="internal_error"))
