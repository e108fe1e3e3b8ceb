"""Mapping registry errors to HTTP answers, in the shapes FastAPI itself uses.

401, 403, 404, 409, 413, 502 and 503 carry ``{"detail": "<reason>"}`` like any
``HTTPException`` (``ErrorMessage``). Every 422, whoever raised it, has the shape of
FastAPI's own validation 422 (``detail``: a list of ``{loc, msg, type}``), so a client
handles one shape whatever caught the error: a request the registry refuses (unknown
group, district or cabinet), a rule file's problems, a rejected CSV import (each bad
row's ``loc`` names the line and column, with ``line``, ``column`` and ``reason``
beside it for the person fixing the file), and any ``HTTPException(422, "text")``
(wrapped by ``_http_error``). ``responses(...)`` documents the codes a route answers
so the OpenAPI lists them.
"""

from __future__ import annotations

from typing import Any, TypedDict

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from devices.registry.service import ConflictError, InvalidError, NotFoundError


class CsvRowProblem(TypedDict):
    line: int | None
    column: str | None
    reason: str


class CsvRejectedError(Exception):
    """A CSV import refused as a whole; nothing of it was stored."""

    def __init__(self, problems: list[CsvRowProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in the CSV")
        self.problems = problems


class ErrorMessage(BaseModel):
    """The body of every error answer other than 422."""

    detail: str = Field(description="what went wrong, for a person")


_MEANINGS: dict[int, str] = {
    400: "the body could not be parsed (not JSON, or broken multipart)",
    401: "no API key, or an unknown or revoked one",
    403: "the key's role may not do this; the answer names the roles that may",
    404: "no such resource",
    409: "the resource's state does not allow this (the answer says why)",
    413: "the upload is too large",
    502: "the time-series store refused the query",
    503: "a service this route needs is not running or not reachable here",
}
_VALIDATION_REF = {"$ref": "#/components/schemas/HTTPValidationError"}


def responses(
    *codes: int, meanings: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error codes a route answers besides its own;
    ``meanings`` replaces the general description of a code for this route."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        description = (meanings or {}).get(code) or _MEANINGS.get(code, "invalid request")
        if code == 422:
            content = {"application/json": {"schema": _VALIDATION_REF}}
            documented[code] = {"description": description, "content": content}
        else:
            documented[code] = {"description": description, "model": ErrorMessage}
    return documented


# Every /api/v1 route: the guard's answers, and 400 for a body that cannot be parsed at
# all (not JSON, broken multipart: FastAPI answers those before validation).
AUTH_RESPONSES = responses(400, 401, 403)


def validation_detail(field: str, reason: str) -> list[dict[str, Any]]:
    """One error in FastAPI's validation shape, located in the request body."""
    # The registry names "body" when the record as a whole is wrong (e.g. a kind's
    # required field); the location is then the body itself.
    loc = ["body"] if field == "body" else ["body", field]
    return [{"loc": loc, "msg": reason, "type": "value_error"}]


def invalid_at(loc: tuple[str, ...], reason: str, value: Any = None) -> RequestValidationError:
    """A 422 for a request part the registry refused, located like FastAPI would locate it."""
    return RequestValidationError(
        [{"type": "value_error", "loc": loc, "msg": reason, "input": value}]
    )


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_404_NOT_FOUND)


async def _conflict(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_409_CONFLICT)


async def _integrity(_request: Request, _exc: Exception) -> JSONResponse:
    # Reached only when two requests race past the registry's own existence checks;
    # the loser gets the same answer a sequential duplicate would.
    return JSONResponse(
        {"detail": "the change conflicts with stored data (made twice at once?)"},
        status_code=status.HTTP_409_CONFLICT,
    )


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidError)
    return JSONResponse(
        {"detail": validation_detail(exc.field, exc.reason)},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def csv_problem_detail(problem: CsvRowProblem) -> dict[str, Any]:
    """One CSV problem in the validation shape, keeping line, column and reason."""
    loc: list[str | int] = ["body", "file"]
    if problem["line"] is not None:
        loc.append(problem["line"])
    if problem["column"] is not None:
        loc.append(problem["column"])
    return {"loc": loc, "msg": problem["reason"], "type": "csv_row", **problem}


async def _csv_rejected(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CsvRejectedError)
    detail = [csv_problem_detail(p) for p in exc.problems]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _http_error(request: Request, exc: Exception) -> Response:
    # A 422 raised by hand with a sentence still reaches the client in the list shape
    # the OpenAPI documents; every other code keeps FastAPI's own answer (and headers).
    assert isinstance(exc, HTTPException)
    if exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT and not isinstance(
        exc.detail, list
    ):
        detail = [{"loc": ["body"], "msg": str(exc.detail), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)
    return await http_exception_handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(InvalidError, _invalid)
    app.add_exception_handler(CsvRejectedError, _csv_rejected)
