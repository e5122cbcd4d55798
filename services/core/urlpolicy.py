"""Which URLs and addresses the fetcher may talk to (SSRF policy).

Pure functions, no I/O: :mod:`workers.fetch` applies them to the URL, to every
address a host resolves to, and to the socket address it finally connects to.
By default only globally routable unicast addresses are allowed; an operator can
open specific networks with ``ATTACHD_FETCH_ALLOW_CIDRS``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from yarl import URL

from services.core.errors import ApiError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

_NAT64_PREFIXES = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = IPv6Network("::/96")

# Refused whatever the running Python's ``is_global``/``is_private`` tables say
# (they changed between patch releases); the address properties cover the rest.
_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", incl. the unspecified 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, incl. the cloud metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. the broadcast 255.255.255.255
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64: the embedding depends on a site-chosen prefix length
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local, incl. fd00::/8
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (already in fc00::/7; named for the record)
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)

# One inet_aton component: hex, octal (leading 0) or decimal.
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def parse_allow_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """Parse ``"127.0.0.0/8, fd12::/16"``; an empty string allows nothing extra."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"invalid network {item!r} in the fetch allow list: {exc}") from None
    return tuple(networks)


def canonical_ip(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo), else ``ip``."""
    if ip.version == 4:
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in prefix for prefix in _NAT64_PREFIXES):
        # Read as the /96 form; other local-use prefix lengths are refused by the network list.
        return IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves, not 0.0.0.0/0.0.0.1
        return IPv4Address(int(ip))
    return ip


def is_address_allowed(ip: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    canonical = canonical_ip(ip)
    if any(address in network for network in allow for address in (ip, canonical)):
        return True
    if canonical == ip:
        return _is_public(ip)
    # A translation address is judged by the IPv4 address it carries; its own
    # prefix sits in ::/8 (which ipaddress calls reserved), so for the wrapper
    # only global reachability and the explicit list are checked.
    return _is_public(canonical) and ip.is_global and not _in_refused_networks(ip)


def _is_public(ip: IPAddress) -> bool:
    return (
        ip.is_global
        and not ip.is_private
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_multicast
        and not ip.is_unspecified
        and not ip.is_reserved
        and not _in_refused_networks(ip)
    )


def _in_refused_networks(ip: IPAddress) -> bool:
    return any(ip in network for network in _REFUSED_NETWORKS)


def literal_ip(host: str) -> IPAddress | None:
    """The address ``host`` denotes if it is an IP literal, in any form the OS resolver accepts.

    IPv4 follows inet_aton: 1 to 4 parts, each decimal, octal (``0177``) or hex
    (``0x7f``), the last filling the remaining bytes (``127.1``, ``2130706433``).
    A single trailing dot is tolerated, as URL parsers do.
    """
    if ":" in host:
        try:
            return IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return None
    parts = host.removesuffix(".").split(".")
    if len(parts) > 4 or not all(_IPV4_PART.fullmatch(part) for part in parts):
        return None
    values = [_parse_ipv4_part(part) for part in parts]
    *head, last = values
    if any(value > 0xFF for value in head) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = last
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return IPv4Address(number)


def _parse_ipv4_part(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part, 8)
    return int(part)


def check_url(url: str | URL) -> URL:
    """Parse ``url`` and refuse anything but a plain ``http(s)://host[:port]/...``."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        port = parsed.port
    except ValueError:
        raise _invalid("url is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise _invalid("only http and https URLs can be fetched")
    if not parsed.host:
        raise _invalid("url has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise _invalid("url must not contain a user name or password")
    if port is None or not 1 <= port <= 65535:
        raise _invalid("the port of url must be between 1 and 65535")
    return parsed


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_url", message, field="url", status=400)
