"""Address lists (IPs, CIDRs, host names) and who the client is behind proxies."""

from __future__ import annotations

from services.kronos_fastapi.addresses import AddressList, client_address, parse_ip


def test_ips_cidrs_and_ipv4_mapped_clients():
    allowed = AddressList(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert allowed.contains(parse_ip("10.1.2.3"))
    assert allowed.contains(parse_ip("192.0.2.7"))
    assert not allowed.contains(parse_ip("192.0.2.8"))
    assert allowed.contains(parse_ip("::ffff:10.4.5.6"))  # an IPv4 client on a dual-stack socket
    assert allowed.contains(parse_ip("2001:db8::1"))
    assert not allowed.contains(parse_ip("not-an-ip"))
    assert not allowed.contains(None)


def test_host_names_resolve_on_refresh_and_keep_their_last_addresses():
    names = AddressList(["localhost", "no-such-host.invalid"])
    assert names.has_names
    assert not names.contains(parse_ip("127.0.0.1"))  # not resolved yet
    names.refresh()
    assert names.contains(parse_ip("127.0.0.1"))
    names.refresh()  # the unresolvable name neither raises nor drops the others
    assert names.contains(parse_ip("127.0.0.1"))


def test_forwarded_for_only_from_trusted_proxies():
    proxies = AddressList(["172.20.0.0/16"])
    # A direct caller cannot claim another address.
    assert client_address("203.0.113.5", "10.0.0.1", proxies) == "203.0.113.5"
    # Through the proxy, the right-most address the proxy did not add itself is the client.
    assert client_address("172.20.0.2", "10.0.0.1", proxies) == "10.0.0.1"
    assert client_address("172.20.0.2", "6.6.6.6, 10.0.0.1, 172.20.0.9", proxies) == "10.0.0.1"
    assert client_address("172.20.0.2", "garbage", proxies) == "172.20.0.2"
    assert client_address("172.20.0.2", None, proxies) == "172.20.0.2"
    assert client_address(None, "10.0.0.1", proxies) is None
