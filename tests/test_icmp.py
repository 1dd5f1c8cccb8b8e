"""rill.icmp: echo packets, checksums and reply parsing, on bytes alone."""

from __future__ import annotations

import struct
from socket import AF_INET, AF_INET6
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from rill import icmp


def ipv4_packet(source: str, destination: str, message: bytes, protocol: int = 1) -> bytes:
    """``message`` behind a 20-byte IPv4 header, as a raw IPv4 socket returns it."""
    src = bytes(int(part) for part in source.split("."))
    dst = bytes(int(part) for part in destination.split("."))
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(message), 0, 0, 64, protocol, 0,
                         src, dst)
    header = header[:10] + icmp.checksum(header).to_bytes(2, "big") + header[12:]
    return header + message


def sequence_of(data: bytes, *args: Any, **kwargs: Any) -> int:
    """The sequence number of the echo reply in ``data``, which must parse."""
    echo = icmp.parse_echo_reply(data, *args, **kwargs)
    assert echo is not None
    return echo.sequence


identifiers = st.integers(0, 0xFFFF)
payloads = st.binary(max_size=64)


class ChecksumTests(SynchronousTestCase):
    def test_known_value(self) -> None:
        """The checksum of a request captured from the Linux kernel matches the kernel's."""
        request = bytes.fromhex("0800" "0000" "1234" "0007") + b"hello!!!"
        self.assertEqual(icmp.checksum(request), 0x80B0)

    def test_odd_length_is_zero_padded(self) -> None:
        """An odd-length message is checksummed as if padded with one zero byte."""
        self.assertEqual(icmp.checksum(b"\x01\x02\x03"), icmp.checksum(b"\x01\x02\x03\x00"))

    def test_rfc1071_example(self) -> None:
        """The worked example of RFC 1071 section 3 (sum 0xddf2) gives its complement."""
        data = bytes.fromhex("0001f203f4f5f6f7")
        self.assertEqual(icmp.checksum(data), ~0xDDF2 & 0xFFFF)

    @given(st.binary(max_size=200))
    def test_filled_in_checksum_sums_to_zero(self, data: bytes) -> None:
        """Any even-length message with its checksum appended checksums to zero."""
        if len(data) % 2:
            data += b"\x00"
        self.assertEqual(icmp.checksum(data + icmp.checksum(data).to_bytes(2, "big")), 0)

    def test_icmpv6_checksum_matches_kernel(self) -> None:
        """An ICMPv6 request to and from ::1 gets the checksum Linux computed for it."""
        packet = icmp.build_echo_request(0x1234, 9, b"abc", AF_INET6, ("::1", "::1"))
        self.assertEqual(packet.hex(), "8000a91812340009616263")


class BuildTests(SynchronousTestCase):
    def test_ipv4_request_layout(self) -> None:
        """An IPv4 request is type 8, code 0, then checksum, identifier, sequence, payload."""
        packet = icmp.build_echo_request(0xBEEF, 0x0102)
        self.assertEqual(packet[:2], b"\x08\x00")
        self.assertEqual(packet[4:8], b"\xbe\xef\x01\x02")
        self.assertEqual(packet[8:], icmp.PAYLOAD)
        self.assertEqual(icmp.checksum(packet), 0)

    def test_ipv6_request_without_addresses_leaves_checksum_to_kernel(self) -> None:
        """Without addresses an ICMPv6 request's checksum is 0, for the kernel to fill in."""
        packet = icmp.build_echo_request(1, 2, family=AF_INET6)
        self.assertEqual(packet[:4], b"\x80\x00\x00\x00")

    def test_sequence_wraps_to_sixteen_bits(self) -> None:
        """Identifiers and sequences are taken modulo 2**16."""
        echo = icmp.parse_echo(icmp.build_echo_request(0x10001, 0x1FFFF))
        assert echo is not None
        self.assertEqual((echo.identifier, echo.sequence), (1, 0xFFFF))


class ParseTests(SynchronousTestCase):
    def reply(self, **kwargs: object) -> bytes:
        return icmp.build_echo_reply(0x4242, 7, **kwargs)  # type: ignore[arg-type]

    def test_reply_without_ip_header(self) -> None:
        """A datagram socket's reply (no IP header) parses to its fields."""
        echo = icmp.parse_echo_reply(self.reply())
        self.assertEqual(echo, icmp.Echo(icmp.ECHO_REPLY, 0, 0x4242, 7, icmp.PAYLOAD))

    def test_reply_behind_ipv4_header(self) -> None:
        """A raw socket's reply has its IPv4 header stripped, options included."""
        packet = ipv4_packet("127.0.0.1", "127.0.0.1", self.reply())
        self.assertEqual(sequence_of(packet, ip_header=True), 7)
        with_options = bytes([0x46]) + packet[1:20] + b"\x01\x01\x01\x00" + packet[20:]
        with_options = with_options[:2] + (len(with_options)).to_bytes(2, "big") + with_options[4:]
        self.assertEqual(sequence_of(with_options, ip_header=True), 7)

    def test_real_kernel_reply(self) -> None:
        """A reply captured from a Linux raw socket parses."""
        packet = bytes.fromhex("450000248ad600004001f2007f0000017f000001"
                               "000088b01234000768656c6c6f212121")
        echo = icmp.parse_echo_reply(packet, ip_header=True)
        self.assertEqual(echo, icmp.Echo(0, 0, 0x1234, 7, b"hello!!!"))

    def test_header_expectation_matters(self) -> None:
        """A packet read with the wrong header expectation is rejected, not misparsed."""
        self.assertIsNone(icmp.parse_echo_reply(self.reply(), ip_header=True))
        packet = ipv4_packet("127.0.0.1", "127.0.0.1", self.reply())
        self.assertIsNone(icmp.parse_echo_reply(packet, ip_header=False))

    def test_request_is_not_a_reply(self) -> None:
        """Echo requests (a raw socket sees its own to loopback) are not replies."""
        self.assertIsNone(icmp.parse_echo_reply(icmp.build_echo_request(0x4242, 7)))
        self.assertIsNotNone(icmp.parse_echo(icmp.build_echo_request(0x4242, 7)))

    def test_bad_checksum(self) -> None:
        """A reply with one bit flipped anywhere is rejected."""
        reply = self.reply()
        for index in range(len(reply)):
            corrupt = bytearray(reply)
            corrupt[index] ^= 0x10
            self.assertIsNone(icmp.parse_echo_reply(bytes(corrupt)), f"byte {index}")

    def test_truncated(self) -> None:
        """Every truncation of a reply, with or without IP header, is rejected."""
        reply = self.reply()
        packet = ipv4_packet("127.0.0.1", "127.0.0.1", reply)
        for length in range(len(reply)):
            self.assertIsNone(icmp.parse_echo_reply(reply[:length]), f"{length} bytes")
        for length in range(len(packet)):
            self.assertIsNone(icmp.parse_echo_reply(packet[:length], ip_header=True))

    def test_ip_padding_beyond_total_length_ignored(self) -> None:
        """Bytes after the IPv4 total length (link padding) are not part of the message."""
        packet = ipv4_packet("127.0.0.1", "127.0.0.1", self.reply()) + b"\x00" * 6
        self.assertEqual(sequence_of(packet, ip_header=True), 7)

    def test_other_icmp_types_and_protocols(self) -> None:
        """Destination-unreachable messages and non-ICMP IP packets are rejected."""
        unreachable = bytearray(self.reply())
        unreachable[0] = 3
        unreachable[2:4] = b"\x00\x00"
        unreachable[2:4] = icmp.checksum(bytes(unreachable)).to_bytes(2, "big")
        self.assertIsNone(icmp.parse_echo_reply(bytes(unreachable)))
        udp = ipv4_packet("127.0.0.1", "127.0.0.1", self.reply(), protocol=17)
        self.assertIsNone(icmp.parse_echo_reply(udp, ip_header=True))

    def test_ipv6_reply_and_checksum(self) -> None:
        """ICMPv6 replies parse; with addresses given, their checksum is verified."""
        addresses = ("::1", "::1")
        reply = icmp.build_echo_reply(5, 6, b"x", AF_INET6, addresses)
        self.assertEqual(sequence_of(reply, AF_INET6, addresses=addresses), 6)
        other = ("::1", "::2")
        self.assertIsNone(icmp.parse_echo_reply(reply, AF_INET6, addresses=other))
        self.assertIsNone(icmp.parse_echo_reply(reply, AF_INET6, ip_header=True))
        self.assertIsNone(icmp.parse_echo_reply(reply, AF_INET))  # type 129 is not ICMPv4

    def test_ipv4_type_is_not_ipv6_reply(self) -> None:
        """An ICMPv4 echo reply read from an ICMPv6 socket is rejected."""
        self.assertIsNone(icmp.parse_echo_reply(self.reply(), AF_INET6))


class PropertyTests(SynchronousTestCase):
    @given(identifiers, identifiers, payloads)
    def test_ipv4_round_trip(self, identifier: int, sequence: int, payload: bytes) -> None:
        """Any IPv4 request parses back to its fields; so does the matching reply."""
        request = icmp.parse_echo(icmp.build_echo_request(identifier, sequence, payload))
        self.assertEqual(request, icmp.Echo(8, 0, identifier, sequence, payload))
        reply = icmp.build_echo_reply(identifier, sequence, payload)
        packet = ipv4_packet("10.0.0.1", "10.0.0.2", reply)
        self.assertEqual(icmp.parse_echo_reply(packet, ip_header=True),
                         icmp.Echo(0, 0, identifier, sequence, payload))

    @given(identifiers, identifiers, payloads)
    def test_ipv6_round_trip(self, identifier: int, sequence: int, payload: bytes) -> None:
        """Any ICMPv6 reply with its checksum verified parses back to its fields."""
        addresses = ("2001:db8::1", "fe80::2%eth0")
        reply = icmp.build_echo_reply(identifier, sequence, payload, AF_INET6, addresses)
        echo = icmp.parse_echo_reply(reply, AF_INET6, addresses=addresses)
        self.assertEqual(echo, icmp.Echo(129, 0, identifier, sequence, payload))

    @given(st.binary(max_size=100), st.sampled_from([AF_INET, AF_INET6, 0]), st.booleans())
    def test_arbitrary_bytes_never_raise(self, data: bytes, family: int, header: bool) -> None:
        """parse_echo_reply returns None or an Echo for any bytes, and never raises."""
        result = icmp.parse_echo_reply(data, family, ip_header=header)
        self.assertTrue(result is None or isinstance(result, icmp.Echo))

    @given(st.binary(min_size=20, max_size=100))
    def test_arbitrary_ipv4_packets_never_raise(self, data: bytes) -> None:
        """Bytes that look like IPv4+ICMP in their first bytes still never raise."""
        data = b"\x45" + data[1:9] + b"\x01" + data[10:]
        result = icmp.parse_echo_reply(data, AF_INET, ip_header=True)
        self.assertTrue(result is None or isinstance(result, icmp.Echo))

    @given(st.binary(max_size=40), st.text(max_size=10))
    def test_ipv6_with_bad_addresses_never_raises(self, data: bytes, address: str) -> None:
        """Malformed pseudo-header addresses make the reply rejected, not an exception."""
        result = icmp.parse_echo_reply(data, AF_INET6, addresses=(address, "::1"))
        self.assertTrue(result is None or isinstance(result, icmp.Echo))
