"""ICMP echo packets: building requests, checksums, parsing and verifying replies.

Pure code: no sockets, no Twisted, so it can be tested on bytes (with Hypothesis).

What a socket hands back differs by kind, and the caller says which it has:

- IPv4 ``SOCK_RAW``: the IPv4 header, then the ICMP message (``ip_header=True``).
- IPv4 ``SOCK_DGRAM`` (the unprivileged "ping socket"): the ICMP message alone.
- IPv6, raw or datagram: the ICMPv6 message alone (the kernel never passes the IPv6 header).

ICMPv6 checksums cover a pseudo-header with both addresses. On Linux the kernel computes them
on send and verifies them on receive for every ICMPv6 socket (RFC 3542 section 3.1 makes that
mandatory), so :func:`build_echo_request` leaves the field zero unless it is given the addresses,
and :func:`parse_echo_reply` verifies it only when it is given them.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from socket import AF_INET, AF_INET6

ECHO_REPLY = 0
ECHO_REQUEST = 8
ECHO6_REQUEST = 128
ECHO6_REPLY = 129
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

#: Every Rill echo request carries this payload; a reply must echo it back unchanged, which
#: rejects most stray replies even when another pinger happens to use the same identifier.
PAYLOAD = b"rill echo probe."  # 16 bytes; no zero bytes, whose loss a checksum misses

_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
_REQUEST_TYPE: dict[int, int] = {AF_INET: ECHO_REQUEST, AF_INET6: ECHO6_REQUEST}
_REPLY_TYPE: dict[int, int] = {AF_INET: ECHO_REPLY, AF_INET6: ECHO6_REPLY}
_LITTLE = struct.pack("=H", 1) == b"\x01\x00"


@dataclass(frozen=True)
class Echo:
    """One ICMP or ICMPv6 echo message (request or reply)."""

    type: int
    code: int
    identifier: int
    sequence: int
    payload: bytes


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: one's complement of the one's complement sum.

    A message whose checksum field is filled in sums to 0 under this function.
    """
    if len(data) % 2:
        data += b"\x00"
    # One big-integer addition of 16-bit words is much faster in Python than a word loop.
    total = sum(memoryview(data).cast("H"))  # native order; fixed up by the byte swap below
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    total = ~total & 0xFFFF
    # RFC 1071 section 2(B): the sum is byte-order independent up to a final swap.
    return int.from_bytes(total.to_bytes(2, "little"), "big") if _LITTLE else total


def _pseudo_header(source: str, destination: str, length: int) -> bytes:
    """The ICMPv6 pseudo-header (RFC 8200 section 8.1) for a message of ``length`` bytes."""
    src = ipaddress.IPv6Address(source.split("%")[0]).packed
    dst = ipaddress.IPv6Address(destination.split("%")[0]).packed
    return src + dst + struct.pack("!I3xB", length, IPPROTO_ICMPV6)


def build_echo_request(
    identifier: int,
    sequence: int,
    payload: bytes = PAYLOAD,
    family: int = AF_INET,
    addresses: tuple[str, str] | None = None,
) -> bytes:
    """An echo request for ``family``, checksum filled in.

    For IPv6 the checksum needs ``addresses`` (source, destination); without them it is left 0
    for the kernel to fill in, which Linux always does for ICMPv6 sockets.
    """
    return _build(_REQUEST_TYPE[family], identifier, sequence, payload, family, addresses)


def build_echo_reply(
    identifier: int,
    sequence: int,
    payload: bytes = PAYLOAD,
    family: int = AF_INET,
    addresses: tuple[str, str] | None = None,
) -> bytes:
    """An echo reply, as a host answering a request would send it (tests and fakes use this)."""
    return _build(_REPLY_TYPE[family], identifier, sequence, payload, family, addresses)


def _build(
    kind: int,
    identifier: int,
    sequence: int,
    payload: bytes,
    family: int,
    addresses: tuple[str, str] | None,
) -> bytes:
    message = _HEADER.pack(kind, 0, 0, identifier & 0xFFFF, sequence & 0xFFFF) + payload
    if family == AF_INET6:
        if addresses is None:
            return message
        value = checksum(_pseudo_header(*addresses, len(message)) + message)
    else:
        value = checksum(message)
    return message[:2] + value.to_bytes(2, "big") + message[4:]


def strip_ipv4_header(packet: bytes) -> bytes | None:
    """The ICMP message inside an IPv4 packet as a raw socket returns it, or None if malformed.

    Checks version, header length, protocol, and that the packet is not truncated; the total
    length field bounds the message, so padding after it is ignored.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_ICMP:
        return None
    header_length = (packet[0] & 0x0F) * 4
    total_length = int.from_bytes(packet[2:4], "big")
    if header_length < 20 or total_length < header_length or total_length > len(packet):
        return None
    return packet[header_length:total_length]


def parse_echo(
    message: bytes, family: int = AF_INET, addresses: tuple[str, str] | None = None
) -> Echo | None:
    """The echo message in ``message`` (ICMP or ICMPv6, no IP header), or None.

    None for anything that is not a whole, correctly checksummed echo request or reply:
    truncated messages, other ICMP types, bad checksums. Never raises on any bytes.
    """
    if len(message) < _HEADER.size:
        return None
    kind, code, _, identifier, sequence = _HEADER.unpack_from(message)
    if kind not in (_REQUEST_TYPE[family], _REPLY_TYPE[family]) or code != 0:
        return None
    if family == AF_INET and checksum(message) != 0:
        return None
    if family == AF_INET6 and addresses is not None:
        try:
            pseudo = _pseudo_header(*addresses, len(message))
        except ValueError:
            return None
        if checksum(pseudo + message) != 0:
            return None
    return Echo(kind, code, identifier, sequence, bytes(message[_HEADER.size :]))


def parse_echo_reply(
    data: bytes,
    family: int = AF_INET,
    ip_header: bool = False,
    addresses: tuple[str, str] | None = None,
) -> Echo | None:
    """The echo *reply* in what a socket returned, or None.

    ``ip_header`` is True for IPv4 raw sockets (see the module docstring); ``addresses``
    (source, destination) lets an ICMPv6 checksum be verified here as well as by the kernel.
    Requests (a raw socket also sees the requests sent to loopback) and everything malformed
    give None. Never raises on any bytes.
    """
    if family not in _REPLY_TYPE:
        return None
    if ip_header:
        if family != AF_INET:
            return None
        stripped = strip_ipv4_header(data)
        if stripped is None:
            return None
        data = stripped
    echo = parse_echo(data, family, addresses)
    if echo is None or echo.type != _REPLY_TYPE[family]:
        return None
    return echo
