"""The operations of the resumable uploads (tus 1.0 at ``/v1/uploads/tus``), from ``services.core.tus``. Pure.

tus speaks in headers: each operation's parameters and answers are mostly headers, and its bodies are the
upload's raw bytes (``application/offset+octet-stream``).
"""

from __future__ import annotations

from typing import Any

from services.core import tus
from services.core.auth import WRITE
from services.core.openapi.operations import IDEMPOTENCY_KEY, READS_BODY, header, operation
from services.core.settings import Settings
from services.core.validation import CREATE_FIELDS, SOURCES

PATH = "/v1/uploads/tus"
UPLOAD = PATH + "/{id}"
OFFSET = {"type": "string", "pattern": "^[0-9]{1,19}$"}


def always(header: dict[str, Any]) -> dict[str, Any]:
    """A response header every such answer carries."""
    return {**header, "required": True}


RESUMABLE = header("Tus-Resumable", {"enum": [tus.VERSION]}, "The protocol version this client speaks.") | {
    "required": True
}
CHECKSUM = header(
    "Upload-Checksum",
    {"type": "string", "pattern": f"^({'|'.join(tus.CHECKSUMS)}) [A-Za-z0-9+/=]+$"},
    "The chunk's digest, `<algorithm> <base64 digest>`: a chunk that does not match is dropped (460).",
)
# What every tus answer carries, errors included.
ANSWER_HEADERS = {"Tus-Resumable": always({"schema": {"const": tus.VERSION}})}
CHUNK = {
    "content": {tus.OFFSET_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
}
# Refused by every tus request but OPTIONS: its version, its credential's, its upload.
REFUSALS = (412, 409, 423, 429)


def _answer(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": {**ANSWER_HEADERS, **headers}}


def _options(op_id: str) -> dict[str, Any]:
    discovery = {
        name: always({"schema": {"type": "string"}})
        for name in ("Tus-Version", "Tus-Extension", "Tus-Checksum-Algorithm", "Tus-Max-Size")
    }
    return operation(
        op_id,
        "What the resumable uploads speak",
        tag="Resumable uploads",
        scope=None,
        description=f"tus {tus.VERSION} with the {', '.join(tus.EXTENSIONS)} extensions; Tus-Max-Size is the "
        "file limit.",
        ok={"204": _answer("The server's tus capabilities.", **discovery)},
    )


def operations(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    metadata_keys = sorted((CREATE_FIELDS - set(SOURCES)) | set(tus.ALIASES))
    expires = {"Upload-Expires": {"schema": {"type": "string"}, "description": "When an unfinished upload expires."}}
    offset = {"Upload-Offset": always({"schema": OFFSET})}
    return {
        ("OPTIONS", PATH): _options("tusOptions"),
        ("OPTIONS", UPLOAD): _options("tusUploadOptions"),
        ("POST", PATH): operation(
            "tusCreate",
            "Start a resumable upload",
            tag="Resumable uploads",
            scope=WRITE,
            description="Upload-Metadata carries the create fields (checked now, before any byte is sent): "
            f"{', '.join(metadata_keys)}, each base64-encoded. Upload-Length is held to the file limit "
            f"({settings.max_file_bytes} bytes unless the account has its own) and the byte budget. With a body "
            f"({tus.OFFSET_CONTENT_TYPE}) its first bytes are stored at once. The upload's id is its ingest "
            "job's: GET /v1/uploads/{id} follows it once its last byte is stored.",
            params=[
                RESUMABLE,
                header("Upload-Length", OFFSET, "The upload's size in bytes.") | {"required": True},
                header("Upload-Metadata", {"type": "string"}, "Comma-separated `key base64(value)` pairs."),
                CHECKSUM,
                IDEMPOTENCY_KEY,
            ],
            body={"required": False, **CHUNK},
            ok={
                "201": _answer(
                    "Created.",
                    Location=always({"schema": {"type": "string"}, "description": "The upload's URL."}),
                    **{"Upload-Expires": always(expires["Upload-Expires"])},
                    **{"Upload-Offset": {"schema": OFFSET, "description": "With a body: the offset reached."}},
                )
            },
            errors=(*REFUSALS, *READS_BODY, 415, 460),
        ),
        ("HEAD", UPLOAD): operation(
            "tusOffset",
            "Where a resumable upload stands",
            tag="Resumable uploads",
            scope=WRITE,
            params=[RESUMABLE],
            ok={
                "200": _answer(
                    "Its offset (resume from there) and length.",
                    **offset,
                    **{"Upload-Length": {"schema": OFFSET}, "Upload-Metadata": {"schema": {"type": "string"}}},
                    **expires,
                )
            },
            errors=(*REFUSALS, 404, 410),
        ),
        ("PATCH", UPLOAD): operation(
            "tusAppend",
            "Append to a resumable upload",
            tag="Resumable uploads",
            scope=WRITE,
            description="The bytes at Upload-Offset, which must be the upload's offset (409 otherwise, with the "
            "offset). The last byte makes the upload an ingest job.",
            params=[RESUMABLE, header("Upload-Offset", OFFSET, "Where these bytes go.") | {"required": True}, CHECKSUM],
            body={"required": True, **CHUNK},
            ok={"204": _answer("Stored.", **offset, **expires)},
            errors=(*REFUSALS, *READS_BODY, 404, 410, 415, 460),
        ),
        ("DELETE", UPLOAD): operation(
            "tusTerminate",
            "Abandon a resumable upload",
            tag="Resumable uploads",
            scope=WRITE,
            description="The upload and every byte it stored go (409 once it is complete: it is an attachment).",
            params=[RESUMABLE],
            ok={"204": _answer("Gone.")},
            errors=(*REFUSALS, 404),
        ),
    }
