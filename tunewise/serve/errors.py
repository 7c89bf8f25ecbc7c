"""Errors in OpenAI's shape, {"error": {"message", "type", "code"}}: our own refusals, invalid bodies and unknown
routes alike."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def error_response(status: int, message: str, type_: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status)


async def _api_error(_req: Request, err: APIError) -> JSONResponse:
    return error_response(err.status, err.message, err.type, err.code)


async def _invalid(_req: Request, err: RequestValidationError) -> JSONResponse:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
    return error_response(400, f"{where}: {e['msg']}", "invalid_request_error", "invalid_field")


async def _http(_req: Request, err: StarletteHTTPException) -> JSONResponse:
    return error_response(err.status_code, str(err.detail), "invalid_request_error", None)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
