"""Mapping registry errors to HTTP answers, in the shapes FastAPI itself uses.

404 and 409 carry ``{"detail": "<reason>"}`` like any ``HTTPException``; a 422 for a
request the registry refuses (unknown group, district or cabinet) has the shape of
FastAPI's own validation 422, so a client handles one shape whatever caught the error.
A rejected CSV import is the exception: its 422 lists ``line``, ``column`` and ``reason``
of every bad row, which is what the person fixing the file needs.
"""

from __future__ import annotations

from typing import Any, TypedDict

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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


async def _csv_rejected(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CsvRejectedError)
    return JSONResponse({"detail": exc.problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(IntegrityError, _integrity)
    app.add_exception_handler(InvalidError, _invalid)
    app.add_exception_handler(CsvRejectedError, _csv_rejected)
