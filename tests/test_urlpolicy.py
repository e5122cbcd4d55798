"""The SSRF policy as pure functions: no test here opens a connection."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import ApiError
from services.core.urlpolicy import canonical_ip, check_url, is_address_allowed, literal_ip, parse_allow_cidrs

REFUSED = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "240.0.0.1",
    "::1",
    "::",
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "2001:db8::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "2002:7f00:0001::1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::808:808",
    "::127.0.0.1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
]
ALLOWED = ["93.184.216.34", "2606:4700::1111", "8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused_by_default(address: str) -> None:
    assert not is_address_allowed(ip_address(address), ())


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_allowed(address: str) -> None:
    assert is_address_allowed(ip_address(address), ())


def test_allow_list_opens_only_its_networks() -> None:
    allow = parse_allow_cidrs("127.0.0.0/8")
    assert is_address_allowed(ip_address("127.0.0.1"), allow)
    assert is_address_allowed(ip_address("::ffff:127.0.0.1"), allow)
    assert not is_address_allowed(ip_address("10.0.0.1"), allow)
    assert not is_address_allowed(ip_address("::1"), allow)


@pytest.mark.parametrize(
    ("wrapped", "embedded"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::10.0.0.1", "10.0.0.1"),
        ("2002:7f00:1::1", "127.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),
        ("64:ff9b:1::a00:1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "10.0.0.1"),  # Teredo, client bits inverted
        ("::1", "::1"),
        ("::", "::"),
        ("2606:4700::1111", "2606:4700::1111"),
    ],
)
def test_canonical_ip(wrapped: str, embedded: str) -> None:
    assert canonical_ip(ip_address(wrapped)) == ip_address(embedded)


def test_parse_allow_cidrs() -> None:
    assert parse_allow_cidrs("") == ()
    assert parse_allow_cidrs(" 127.0.0.0/8 , fd12::/16,") == (ip_network("127.0.0.0/8"), ip_network("fd12::/16"))
    with pytest.raises(ValueError, match=re.escape("'10.0.0.1/8'")):
        parse_allow_cidrs("10.0.0.1/8")
    with pytest.raises(ValueError, match="'nonsense'"):
        parse_allow_cidrs("127.0.0.0/8,nonsense")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("10.1.257", "10.1.1.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ],
)
def test_literal_ip(host: str, address: str) -> None:
    assert literal_ip(host) == ip_address(address)


@pytest.mark.parametrize(
    "host", ["example.com", "localhost", "256.0.0.1", "1.2.3.4.5", "08.0.0.1", "1..1", "", "127.0.0.1 x", "::g"]
)
def test_not_a_literal_ip(host: str) -> None:
    assert literal_ip(host) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/file",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://user:pw@example.com/",
        "http://user@example.com/",
        "http:///path",
        "/relative/path",
        "http://example.com:0/",
        "http://example.com:99999/",
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(ApiError) as caught:
        check_url(url)
    assert (caught.value.code, caught.value.field, caught.value.status) == ("invalid_url", "url", 400)


def test_check_url_accepts_http_and_https() -> None:
    assert check_url("https://example.com/a%20b.pdf").name == "a b.pdf"
    assert check_url("http://[2606:4700::1111]:8080/").port == 8080


_PRIVATE_V4 = st.one_of(
    st.integers(0, 2**24 - 1).map(lambda n: IPv4Address(int(IPv4Address("10.0.0.0")) + n)),
    st.integers(0, 2**16 - 1).map(lambda n: IPv4Address(int(IPv4Address("169.254.0.0")) + n)),
)


def _embeddings(v4: IPv4Address) -> st.SearchStrategy[IPv4Address | IPv6Address]:
    n = int(v4)
    return st.one_of(
        st.just(v4),
        st.just(IPv6Address(0xFFFF << 32 | n)),  # IPv4-mapped
        st.just(IPv6Address(n)),  # IPv4-compatible
        st.just(IPv6Address(0x64_FF9B << 96 | n)),  # NAT64 well-known prefix
        st.just(IPv6Address(0x64_FF9B_0001 << 80 | n)),  # NAT64 local-use prefix
        st.integers(0, 2**80 - 1).map(lambda rest: IPv6Address(0x2002 << 112 | n << 80 | rest)),  # 6to4
        st.integers(0, 2**64 - 1).map(  # Teredo: server, flags and port, then the inverted client
            lambda rest: IPv6Address(0x2001_0000 << 96 | rest << 32 | n ^ 0xFFFF_FFFF)
        ),
    )


@given(st.data())
def test_private_and_link_local_refused_in_any_embedding(data: st.DataObject) -> None:
    v4 = data.draw(_PRIVATE_V4)
    address = data.draw(_embeddings(v4))
    assert canonical_ip(address) == v4
    assert not is_address_allowed(address, ())
