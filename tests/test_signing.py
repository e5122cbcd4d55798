from fractions import Fraction
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.core.signing import expiry, sign, signed_path, verify

SECRET = b"s3cret-for-tests"
ID = "0190a5f2-7c1e-7b3a-9d4e-2f6a8b1c3d5e"
NOW = 1_700_000_000.5
EXPIRES = 1_700_000_300


def _refused(code: str, *args: object, now: float = NOW) -> None:
    with pytest.raises(ApiError) as caught:
        verify(*args, now=now)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.status == 403


def test_round_trip_through_the_path() -> None:
    url = urlsplit(signed_path(SECRET, ID, "thumbnail", EXPIRES))
    assert url.path == f"/v1/files/{ID}/thumbnail"
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    assert query["expires"] == str(EXPIRES)
    verify(SECRET, ID, "thumbnail", query["expires"], query["signature"], now=NOW)


def test_signature_is_urlsafe_and_unpadded() -> None:
    signature = sign(SECRET, ID, "original", EXPIRES)
    assert len(signature) == 43
    assert set(signature) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    ("attachment_id", "variant", "expires", "signature"),
    # signature None: the genuine signature for (ID, "original", EXPIRES).
    [
        ("0190a5f2-7c1e-7b3a-9d4e-2f6a8b1c3d5f", "original", str(EXPIRES), None),
        (ID, "small", str(EXPIRES), None),
        (ID, "original", str(EXPIRES + 1), None),
        (ID, "original", "0" + str(EXPIRES), None),
        (ID, "original", "+" + str(EXPIRES), None),
        (ID, "original", str(EXPIRES), "A" * 43),
        (ID, "original", str(EXPIRES), ""),
        (ID, "original", str(EXPIRES), "\u00e9" * 43),
        (ID, "original", None, None),
        (ID, "original", "", None),
        (ID, "original", "soon", None),
        (ID, "original", "9" * 5000, None),
        (ID, "huge", str(EXPIRES), None),
    ],
)
def test_tampered_links_are_invalid(
    attachment_id: str, variant: str, expires: str | None, signature: str | None
) -> None:
    if signature is None:
        signature = sign(SECRET, ID, "original", EXPIRES)
    _refused("invalid_signature", SECRET, attachment_id, variant, expires, signature)


def test_missing_signature_is_invalid() -> None:
    _refused("invalid_signature", SECRET, ID, "original", str(EXPIRES), None)


def test_other_secret_is_invalid() -> None:
    signature = sign(b"another secret", ID, "original", EXPIRES)
    _refused("invalid_signature", SECRET, ID, "original", str(EXPIRES), signature)


def test_expired_link() -> None:
    signature = sign(SECRET, ID, "original", EXPIRES)
    verify(SECRET, ID, "original", str(EXPIRES), signature, now=EXPIRES - 0.001)
    _refused("link_expired", SECRET, ID, "original", str(EXPIRES), signature, now=EXPIRES)


def test_expired_and_tampered_is_invalid_not_expired() -> None:
    signature = sign(SECRET, ID, "original", EXPIRES)
    _refused("invalid_signature", SECRET, ID, "small", str(EXPIRES), signature, now=EXPIRES + 10)


def test_unknown_variant_cannot_be_signed() -> None:
    with pytest.raises(ValueError):
        signed_path(SECRET, ID, "huge", EXPIRES)


@given(
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    ttl=st.integers(min_value=0, max_value=7 * 86400),
    bucket=st.integers(min_value=1, max_value=3600),
)
def test_expiry_is_bucketed(now: float, ttl: int, bucket: int) -> None:
    expires = expiry(now, ttl, bucket_s=bucket)
    earliest = Fraction(now) + ttl  # exact: float sums could round across the bound
    assert earliest <= expires < earliest + bucket
    assert expires % bucket == 0


@given(
    bucket_index=st.integers(min_value=0, max_value=10**7),
    offsets=st.lists(st.integers(min_value=1, max_value=300), min_size=2, max_size=5),
    ttl=st.integers(min_value=0, max_value=86400),
)
def test_expiry_is_identical_within_a_bucket(bucket_index: int, offsets: list[int], ttl: int) -> None:
    # Every `now` with now + ttl in (k*300, (k+1)*300] lands on the same expiry.
    base = bucket_index * 300 - ttl
    assert len({expiry(base + offset, ttl) for offset in offsets}) == 1
