import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.encoding import DataSource, check_size, decode_to, decoded_size, parse_data
from services.core.errors import ApiError

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(40))).decode()


def _decode(b64: str, chunk_chars: int = 1 << 20) -> bytes:
    out = bytearray()
    written = decode_to(b64, out.extend, chunk_chars=chunk_chars)
    assert written == len(out)
    return bytes(out)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PNG_B64, DataSource(PNG_B64, None)),
        (f"  {PNG_B64}\n", DataSource(PNG_B64, None)),
        (f"data:image/png;base64,{PNG_B64}", DataSource(PNG_B64, "image/png")),
        (f"DATA:Image/PNG;BASE64,{PNG_B64}", DataSource(PNG_B64, "image/png")),
        (f"data:image/png;name=a.png;base64,{PNG_B64}", DataSource(PNG_B64, "image/png")),
        (f"data:text/plain;charset=utf-8;base64,{PNG_B64}", DataSource(PNG_B64, "text/plain")),
        (f"data:;base64,{PNG_B64}", DataSource(PNG_B64, None)),
    ],
)
def test_parse_data(value: str, expected: DataSource) -> None:
    assert parse_data(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        b"QUJD",
        ["QUJD"],
        "",
        "   ",
        "data:image/png;base64",
        "data:image/png;base64,",
        "data:png;base64,QUJD",
    ],
)
def test_parse_data_refuses(value: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_data(value, field="files[0].data")
    assert caught.value.code == "invalid_data"
    assert caught.value.field == "files[0].data"
    assert caught.value.status == 400


@pytest.mark.parametrize("value", ["data:text/plain,hello", "data:,hello", "data:base64,QUJD", "data:;base64;x=y,QUJD"])
def test_parse_data_refuses_non_base64_uris(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_data(value)
    assert caught.value.code == "invalid_data"
    assert caught.value.message == "only base64 data: URIs are accepted"
    assert caught.value.field == "data"


@given(st.binary(max_size=200))
def test_decoded_size_is_exact(raw: bytes) -> None:
    b64 = base64.b64encode(raw).decode()
    assert decoded_size(b64) == len(raw) == len(base64.b64decode(b64))
    assert decoded_size(b64.rstrip("=")) == len(raw)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 6])
def test_decoded_size_for_each_remainder(length: int) -> None:
    assert decoded_size(base64.b64encode(b"x" * length).decode()) == length


@pytest.mark.parametrize("junk", ["=", "==", "==="])
def test_decoded_size_is_never_negative(junk: str) -> None:
    assert decoded_size(junk) == 0


def test_check_size() -> None:
    b64 = base64.b64encode(b"x" * 10).decode()
    check_size(b64, 10)
    with pytest.raises(ApiError) as caught:
        check_size(b64, 9, field="files[1].data")
    assert caught.value.code == "size_exceeded"
    assert caught.value.status == 413
    assert caught.value.field == "files[1].data"
    assert "9 bytes" in caught.value.message


@pytest.mark.parametrize(
    ("b64", "reason"),
    [
        ("QUJD!A==", "'!'"),
        ("QUJD QQ=", "' '"),
        ("QUJD\nQQ==", "'\\n'"),
        ("QUJ-", "URL-safe"),
        ("QUJ_", "URL-safe"),
        ("QUJ\u00e9", "position 3"),
        ("abc", "multiple of 4"),
        ("QUJDR", "multiple of 4"),
        ("QQ=A", "padding"),
        ("Q===", "padding"),
        ("====", "padding"),
        ("QQ==QUJD", "padding"),
    ],
)
def test_invalid_base64(b64: str, reason: str) -> None:
    with pytest.raises(ApiError) as caught:
        _decode(b64)
    error = caught.value
    assert error.code == "invalid_base64"
    assert error.field == "data"
    assert error.status == 400
    assert error.message.startswith("data is not valid base64: ")
    assert reason in error.message
    assert "\n" not in error.message


def test_padding_at_a_chunk_boundary_is_refused() -> None:
    with pytest.raises(ApiError) as caught:
        _decode("QQ==QUJD", chunk_chars=4)
    assert caught.value.code == "invalid_base64"


def test_invalid_character_position_counts_from_the_start() -> None:
    with pytest.raises(ApiError) as caught:
        _decode("QUJD" * 5 + "QU*D", chunk_chars=8)
    assert "position 22" in caught.value.message


def test_chunked_decode_writes_each_chunk() -> None:
    raw = bytes(range(256)) * 4
    chunks: list[bytes] = []
    assert decode_to(base64.b64encode(raw).decode(), chunks.append, chunk_chars=64) == len(raw)
    assert b"".join(chunks) == raw
    assert len(chunks) > 1 and all(len(chunk) <= 48 for chunk in chunks)


@given(st.binary(max_size=500), st.integers(min_value=4, max_value=64))
def test_chunked_decode_is_identical(raw: bytes, chunk_chars: int) -> None:
    b64 = base64.b64encode(raw).decode()
    assert _decode(b64, chunk_chars=chunk_chars) == raw == _decode(b64)


def test_chunk_chars_must_hold_a_quantum() -> None:
    with pytest.raises(ValueError):
        decode_to("QUJD", lambda _: None, chunk_chars=3)
