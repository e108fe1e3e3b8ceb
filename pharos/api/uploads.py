"""Reading an uploaded CSV: a multipart field ``file`` or a raw ``text/csv`` body.

This is the one ``async`` dependency: it only awaits the request stream (no blocking
call), and hands the route plain text so the route itself stays a plain ``def``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, HTTPException, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError

from pharos.api.errors import CsvRejectedError

# A city's whole lighting inventory is a few MB of CSV; more than this is a wrong file.
MAX_CSV_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024


def _too_large() -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the CSV is larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB; split it",
    )


async def _read_upload(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise _too_large()
    return data


async def _read_raw_body(request: Request) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_CSV_BYTES:
            raise _too_large()
    return bytes(data)


def _is_text_csv(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "text/csv"


def _decode(data: bytes) -> str:
    # utf-8-sig: spreadsheet programs ("CSV UTF-8" in Excel) start the file with a BOM.
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvRejectedError(
            [{"line": line, "column": None, "reason": "not UTF-8 text; save the file as CSV UTF-8"}]
        ) from None


async def read_csv_text(
    request: Request,
    file: Annotated[
        UploadFile | None, File(description="the CSV file (or send the CSV as a text/csv body)")
    ] = None,
) -> str:
    if file is not None:
        return _decode(await _read_upload(file))
    if _is_text_csv(request):
        return _decode(await _read_raw_body(request))
    raise RequestValidationError(
        [
            {
                "type": "missing",
                "loc": ("body", "file"),
                "msg": "send the CSV as multipart field 'file' or as a text/csv body",
                "input": None,
            }
        ]
    )


CsvText = Annotated[str, Depends(read_csv_text)]
