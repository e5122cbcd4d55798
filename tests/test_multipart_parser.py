"""The ingress's streaming multipart parser: boundaries split across chunks, CRLF in data, framing edge cases."""

from __future__ import annotations

import itertools
import warnings

import pytest
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.ingress.multipart import MultipartParser, boundary_of, disposition

BOUNDARY = b"----b0undary-7MA4YWxk"


class Chunks:
    """A StreamReader as the parser uses it: readchunk() hands out the chunks it was given, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readchunk(self) -> tuple[bytes, bool]:
        return (self._chunks.pop(0), False) if self._chunks else (b"", False)


def body(
    parts: list[tuple[str, bytes]],
    boundary: bytes = BOUNDARY,
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
) -> bytes:
    out = preamble + (b"\r\n" if preamble else b"")
    for name, data in parts:
        filename = '; filename="f.bin"' if name == "file" else ""
        out += (
            b"--"
            + boundary
            + padding
            + b"\r\n"
            + f'Content-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return out + b"--" + boundary + b"--" + padding + epilogue


async def parse(chunks: list[bytes], boundary: bytes = BOUNDARY) -> list[tuple[str | None, bytes]]:
    parser = MultipartParser(Chunks(chunks), boundary)
    out = []
    while (part := await parser.next_part()) is not None:
        out.append((part.name, b"".join([c async for c in parser.chunks()])))
    return out


def split_at(data: bytes, *cuts: int) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


TRICKY = (
    b"\r\n--"
    + BOUNDARY[:-1]
    + b"X\r\n"
    + b"\r\n\r\n--\r\n-"
    + b"\r\n--"
    + BOUNDARY[:7]
    + b"\r"
    + b"--"
    + BOUNDARY
    + b" not after CRLF\r"
)


async def test_every_split_point_of_a_body_gives_the_same_parts():
    parts = [("target_type", b"Task"), ("file", TRICKY), ("name", b"")]
    data = body(parts)
    assert await parse([data]) == parts
    for cut in range(1, len(data)):
        assert await parse(split_at(data, cut)) == parts, cut
    assert await parse([data[i : i + 1] for i in range(len(data))]) == parts


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["file", "a", "target_id"]),
            st.binary(max_size=300)
            | st.lists(
                st.sampled_from([b"\r", b"\n", b"-", b"--", b"\r\n--", BOUNDARY[:5], BOUNDARY, b"x"]), max_size=40
            ).map(b"".join),
        ),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
async def test_any_parts_split_anywhere_come_back_whole(parts, cuts):
    parts = [(name, data.replace(b"\r\n--" + BOUNDARY, b"\r\n--x")) for name, data in parts]  # what a client ensures
    data = body(parts)
    assert await parse(split_at(data, *(c % len(data) for c in cuts))) == parts


async def test_crlf_inside_file_data_is_data():
    parts = [("file", b"line one\r\nline two\r\n\r\n--not a boundary\r\n"), ("note", b"\r\n")]
    assert await parse([body(parts)]) == parts


async def test_preamble_and_epilogue_are_ignored():
    parts = [("a", b"1"), ("file", b"two")]
    data = body(parts, preamble=b"This is a preamble. --" + BOUNDARY[:4], epilogue=b"\r\nan epilogue\r\n--x")
    for cut in range(1, len(data), 7):
        assert await parse(split_at(data, cut)) == parts


async def test_transport_padding_after_a_boundary_is_allowed():
    parts = [("a", b"1"), ("file", b"two")]
    assert await parse([body(parts, padding=b" \t ")]) == parts


async def test_a_part_without_headers_has_no_name():
    data = b"--" + BOUNDARY + b"\r\n\r\nbare\r\n--" + BOUNDARY + b"--\r\n"
    assert await parse([data]) == [(None, b"bare")]


async def test_an_empty_form_has_no_parts():
    assert await parse([b"--" + BOUNDARY + b"--\r\n"]) == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(body([("file", b"abc")])[:-10], id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"no boundary anywhere", id="no-boundary"),
        pytest.param(b"--" + BOUNDARY + b"junk\r\n\r\nx\r\n--" + BOUNDARY + b"--", id="junk-after-boundary"),
        pytest.param(
            b"--" + BOUNDARY + b"\r\nContent-Disposition form-data\r\n\r\nx\r\n--" + BOUNDARY + b"--",
            id="header-without-colon",
        ),
        pytest.param(b"--" + BOUNDARY + b"\r\n" + b"X-A: " + b"a" * 9000 + b"\r\n\r\n", id="header-too-long"),
    ],
)
async def test_malformed_bodies_are_a_400(data):
    with pytest.raises(ApiError) as caught:
        await parse(split_at(data, len(data) // 2))
    assert caught.value.status == 400 and caught.value.code == "invalid_multipart"


def test_the_boundary_comes_from_the_content_type_quoted_or_not():
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of('multipart/form-data; boundary="a b:c?d"') == b"a b:c?d"
    assert boundary_of('multipart/form-data; charset=utf-8; BOUNDARY="xyz"') == b"xyz"
    for bad in ("multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "x" * 71):
        with pytest.raises(ApiError) as caught:
            boundary_of(bad)
        assert caught.value.status == 400


async def test_a_quoted_boundary_with_a_space_parses():
    boundary = b"a b:c?d"
    parts = [("file", b"data"), ("x", b"y")]
    assert await parse([body(parts, boundary)], boundary_of('multipart/form-data; boundary="a b:c?d"')) == parts


def aiohttp_disposition(header: str | None) -> tuple[str | None, str | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, params = parse_content_disposition(header)
    return params.get("name"), content_disposition_filename(params, "filename")


@pytest.mark.parametrize(
    "header",
    [
        'form-data; name="file"; filename="photo.jpg"',
        'form-data; name="target_type"',
        'form-data; name="file"; filename="/etc/passwd"',
        'form-data; name="file"; filename="a\\"b.txt"',
        'form-data; name="file"; filename="semi;colon.txt"',
        "form-data; name=file; filename=plain.txt",
        "form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.jpg",
        'form-data; name="file"; filename="100%.txt"',
        'Form-Data; Name="file"; Filename="X.JPG"',
        'form-data; name="file"; filename=""',
        "attachment",
        None,
        "",
        'form-data; name="files[0]"; filename="répertoire/é.png"',
    ],
)
def test_content_disposition_reads_as_aiohttp_reads_it(header):
    assert disposition(header) == aiohttp_disposition(header)


@given(st.text(min_size=1, max_size=40), st.one_of(st.none(), st.text(max_size=40)))
def test_the_fast_path_agrees_with_aiohttp_on_any_names(name, filename):
    header = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
    assert disposition(header) == aiohttp_disposition(header)


# --- through the API ---------------------------------------------------------------------------------


async def test_a_truncated_multipart_upload_is_a_400_and_stores_nothing(service):
    data = body([("target_type", b"Task"), ("target_id", b"1"), ("file", b"x" * 5000)])[:-100]
    resp = await service.client.post(
        "/v1/attachments",
        data=data,
        headers={**service.auth(), "Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"},
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_multipart"
    assert await service.rows() == [] and await service.stored_keys() == []


async def test_a_multipart_upload_without_a_boundary_is_a_400(service):
    resp = await service.client.post(
        "/v1/attachments", data=b"--x--", headers={**service.auth(), "Content-Type": "multipart/form-data"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"]["code"] == "invalid_multipart"
