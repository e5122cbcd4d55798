import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.core.ranges import content_range, etag_matches, if_range_matches, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 1000, None),
        ("bytes=0-99", 1000, (0, 99)),
        ("BYTES=0-99", 1000, (0, 99)),
        ("bytes=0-0", 1, (0, 0)),
        ("bytes=100-", 1000, (100, 999)),
        ("bytes=900-5000", 1000, (900, 999)),
        ("bytes=-500", 1000, (500, 999)),
        ("bytes=-5000", 1000, (0, 999)),
        ("bytes=0-" + "9" * 5000, 1000, (0, 999)),
        # Ignored: serve the full body.
        ("bytes=0-1,5-6", 1000, None),
        ("bytes=5-1", 1000, None),
        ("items=0-1", 1000, None),
        ("bytes=", 1000, None),
        ("bytes=-", 1000, None),
        ("bytes=a-b", 1000, None),
        ("bytes=0x10-", 1000, None),
        ("bytes = 0-1", 1000, None),
        ("bytes=\u0661-", 1000, None),
        ("", 1000, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=1000-", 1000),
        ("bytes=1000-2000", 1000),
        ("bytes=" + "9" * 5000 + "-", 1000),
        ("bytes=0-", 0),
        ("bytes=-1", 0),
        ("bytes=-0", 1000),
    ],
)
def test_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_range(header, size)
    assert caught.value.code == "range_not_satisfiable"
    assert caught.value.status == 416
    assert caught.value.headers == {"Content-Range": f"bytes */{size}"}


@given(st.data(), st.integers(min_value=1, max_value=10**12))
def test_ranges_stay_within_bounds(data: st.DataObject, size: int) -> None:
    start = data.draw(st.integers(min_value=0, max_value=size - 1))
    end = data.draw(st.integers(min_value=start, max_value=size * 2))
    suffix = data.draw(st.integers(min_value=1, max_value=size * 2))
    for header in (f"bytes={start}-{end}", f"bytes={start}-", f"bytes=-{suffix}"):
        parsed = parse_range(header, size)
        assert parsed is not None
        first, last = parsed
        assert 0 <= first <= last <= size - 1
        assert content_range(first, last, size) == f"bytes {first}-{last}/{size}"
    assert parse_range(f"bytes={start}-{end}", size) == (start, min(end, size - 1))


def test_content_range_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        content_range(5, 4, 10)
    with pytest.raises(ValueError):
        content_range(0, 10, 10)


@pytest.mark.parametrize(
    ("if_range", "etag", "expected"),
    [
        (None, '"abc"', True),
        ('"abc"', '"abc"', True),
        (' "abc" ', '"abc"', True),
        ('"abd"', '"abc"', False),
        ('W/"abc"', '"abc"', False),
        ('W/"abc"', 'W/"abc"', False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", '"abc"', False),
    ],
)
def test_if_range(if_range: str | None, etag: str, expected: bool) -> None:
    assert if_range_matches(if_range, etag) is expected


@pytest.mark.parametrize(
    ("if_none_match", "etag", "expected"),
    [
        (None, '"abc"', False),
        ("*", '"abc"', True),
        ('"abc"', '"abc"', True),
        ('"xyz", "abc"', '"abc"', True),
        ('"xyz","abc"', '"abc"', True),
        ('W/"abc"', '"abc"', True),
        ('"abc"', 'W/"abc"', True),
        ('"xyz", W/"uvw"', '"abc"', False),
        ('"a,b"', '"a,b"', True),
        ('"a,b"', '"a"', False),
        ('"ab"', '"abc"', False),
        ("", '"abc"', False),
    ],
)
def test_etag_matches(if_none_match: str | None, etag: str, expected: bool) -> None:
    assert etag_matches(if_none_match, etag) is expected
