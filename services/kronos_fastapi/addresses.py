"""Who is calling: lists of IPs, CIDRs and host names (resolved through DNS), and the client address.

Host names (e.g. compose service names) are resolved when the list is refreshed — at start-up and
every ``KRONOS_ADDRESS_REFRESH_S`` — so a container that starts later or changes IP is picked up.
A client's own claims (X-Forwarded-For) are believed only from a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable

logger = logging.getLogger("kronos.service")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str | None) -> IPAddress | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AddressList:
    """IP addresses, CIDRs and host names; ``contains(ip)`` answers from the last resolution."""

    def __init__(self, entries: Iterable[str]):
        self.entries = list(entries)
        self._networks: list[IPNetwork] = []
        self._names: list[str] = []
        for entry in self.entries:
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self._names.append(entry)
        self._resolved: dict[str, set[IPAddress]] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def has_names(self) -> bool:
        return bool(self._names)

    def refresh(self) -> None:
        """Resolve every host name (blocking DNS: call from a thread). A name that fails to
        resolve keeps its last known addresses, so a DNS hiccup does not lock clients out."""
        for name in self._names:
            try:
                infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError) as exc:
                if name not in self._resolved:
                    logger.warning("cannot resolve %r yet: %s", name, exc)
                continue
            found = {parse_ip(info[4][0]) for info in infos}
            self._resolved[name] = {ip for ip in found if ip is not None}

    def contains(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return False
        if any(ip in network for network in self._networks if network.version == ip.version):
            return True
        return any(ip in addresses for addresses in self._resolved.values())


def client_address(peer: str | None, forwarded_for: str | None, trusted: AddressList) -> str | None:
    """The caller's IP: the TCP peer, or — when the peer is a trusted proxy — the right-most
    X-Forwarded-For entry that is not itself a trusted proxy."""
    peer_ip = parse_ip(peer)
    if peer_ip is None:
        return peer
    if not forwarded_for or not trusted.contains(peer_ip):
        return str(peer_ip)
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        hop_ip = parse_ip(hop)
        if hop_ip is None:
            break  # garbage in the chain: stop believing it
        if not trusted.contains(hop_ip):
            return str(hop_ip)
    return str(peer_ip)
