"""Every error the service answers is JSON: {"error": {"status": ..., "code": ..., "message": ...}}, except
under /v2, where the Open Inference Protocol says {"error": "<message>"} (Triton's and KServe's clients
read the message from there)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ServiceError(Exception):
    """An error with its HTTP status, a stable machine-readable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def error_body(status: int, code: str, message: str, path: str = "") -> dict:
    if is_v2(path):
        return {"error": message}
    return {"error": {"status": status, "code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None, path: str = "") -> JSONResponse:
    return JSONResponse(error_body(status, code, message, path), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", details or "invalid request", path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None), request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # A bug, not bad input: still JSON, and logged with its traceback by uvicorn.
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}", path=request.url.path)
