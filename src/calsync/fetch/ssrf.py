"""The SSRF guard: which hosts and addresses the HTTP fetcher may connect to.

By default only public addresses are reachable. `TargetGuard` decides; the
`GuardedResolver` applies it to every address DNS returns, at connect time, so a
name that resolves (or rebinds) to a private address is refused like an IP
literal is, and the address checked is the address connected to.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from typing import Any

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from calsync.core.errors import ValidationError

__all__ = [
    "BlockedTarget",
    "GuardedResolver",
    "TargetGuard",
    "allow_advice",
    "guarded_connector",
    "host_problem",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HOST_NAME = re.compile(r"^(?:\*\.)?[a-z0-9_](?:[a-z0-9_\-.]*[a-z0-9_])?$")
# Hosts made only of digits, dots and hex markers: legacy IPv4 spellings such as
# 2130706433, 0x7f.1 or 127.1 that the socket layer would map onto an address.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]*))*$")
# A URL's host name: dot-separated labels of ASCII letters, digits, '-' and '_'
# (yarl has turned an international name into its xn-- form by then).
_URL_HOST = re.compile(
    r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$", re.ASCII
)
# RFC 6761: "localhost" and every name under it are the loopback interface.
_LOOPBACK_NAMES = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


class BlockedTarget(Exception):
    """Raised inside the connector when the guard refuses a resolved address."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host, reason)
        self.host = host
        self.reason = reason


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_normal_host(text).split("%", 1)[0])
    except ValueError:
        return None


def _unwrap(address: IPAddress) -> IPAddress:
    """Return the IPv4 address a mapped or NAT64 address stands for, else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def classify(address: IPAddress) -> str | None:
    """Why *address* is not a public unicast address, or None when it is one."""
    address = _unwrap(address)
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        embedded = classify(address.sixtofour)
        if embedded is not None:
            return f"a 6to4 address wrapping {embedded}"
    checks = (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (
            address.is_link_local,
            "a link-local address (where cloud metadata services live)",
        ),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (
            isinstance(address, ipaddress.IPv6Address) and address.is_site_local,
            "a site-local address",
        ),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def host_problem(host: str) -> str | None:
    """Why *host* (a URL's host) is neither an IP address nor a host name, or None.

    ``http://exa mple.com/`` parses, but no such host can exist: refuse it when
    the URL is given, not at every sync.
    """
    if _address(host) is not None:
        return None
    if _URL_HOST.match(_normal_host(host)):
        return None
    return f"{host!r} is not a valid host name"


def allow_advice(entry: str) -> str:
    """Say, in the user's words, how to open *entry* (a host or network) to calsync."""
    return (
        f'add "{entry}" to the allow-list: allow = ["{entry}"] under [fetch] in '
        f"calsync.toml, or CALSYNC_FETCH_ALLOW={entry} (in code: allow=[...])"
    )


def _allow_entry(entry: str) -> IPNetwork | str:
    text = entry.strip()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = _normal_host(text)
    if not _HOST_NAME.match(name):
        raise ValidationError(
            f"allow-list entry {entry!r} is neither a network (10.0.0.0/8, ::1) nor "
            "a host name (intranet.example, *.corp.example)"
        )
    return name


@attrs.frozen(cache_hash=True)  # a key of _check_host's cache: hashed per fetch
class TargetGuard:
    """Which targets the HTTP fetcher may reach: public addresses, plus an allow-list.

    Build it with `from_allow`: entries are networks or addresses (``10.0.0.0/8``,
    ``127.0.0.1``, ``::1``), host names (``intranet.example``) or domains
    (``*.corp.example``, its subdomains). An allowed host name is trusted
    whatever it resolves to.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()

    @classmethod
    def from_allow(cls, allow: Iterable[str]) -> TargetGuard:
        """Parse allow-list entries; raise `ValidationError` for one that is neither."""
        if isinstance(allow, str):
            raise ValidationError("allow must be a list of entries, not one string")
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        domains: list[str] = []
        for entry in allow:
            parsed = _allow_entry(entry)
            if not isinstance(parsed, str):
                networks.append(parsed)
            elif parsed.startswith("*."):
                domains.append(parsed[1:])
            else:
                hosts.add(parsed)
        return cls(tuple(networks), frozenset(hosts), tuple(domains))

    def host_allowed(self, host: str) -> bool:
        """Whether *host* (a name) is on the allow-list by name or domain."""
        name = _normal_host(host)
        return name in self.hosts or name.endswith(self.domains)

    def refusal(self, address: str) -> str | None:
        """Why connecting to the IP *address* is refused, or None when it is allowed."""
        parsed = _address(address)
        if parsed is None:
            return "not an IP address"
        candidates = {parsed, _unwrap(parsed)}
        if any(ip in network for ip in candidates for network in self.networks):
            return None
        return classify(parsed)

    def check_host(self, host: str) -> str | None:
        """Why a URL's host is refused before any lookup, or None to go on.

        IP literals are judged here (aiohttp connects to them without asking the
        resolver); names are judged by the `GuardedResolver` on what they resolve to.
        """
        return _check_host(self, host)

    def _check_host(self, host: str) -> str | None:
        if self.host_allowed(host):
            return None
        if _address(host) is not None:
            return self.refusal(host)
        name = _normal_host(host)
        if _NUMERIC_HOST.match(name):
            return "a numeric host that is not a canonical IP address"
        if name == "localhost" or name.endswith(".localhost"):
            return self._loopback_name()
        return None

    def _loopback_name(self) -> str | None:
        """Judge ``localhost`` as its addresses: refused unless allowed by network."""
        opened = any(
            network.version == loopback.version and network.overlaps(loopback)
            for network in self.networks
            for loopback in _LOOPBACK_NAMES
        )
        return None if opened else "a loopback name (localhost is this machine)"


# A fetcher asks about the same few hosts on every sync; the verdict is pure.
@functools.lru_cache(maxsize=4096)
def _check_host(guard: TargetGuard, host: str) -> str | None:
    return guard._check_host(host)


class GuardedResolver(AbstractResolver):
    """Wrap a resolver so that only addresses the `TargetGuard` allows come back.

    Refused addresses are dropped; when none is left the lookup raises
    `BlockedTarget`, which aiohttp lets through to the fetcher.
    """

    def __init__(
        self, guard: TargetGuard, inner: AbstractResolver, *, owns_inner: bool = True
    ) -> None:
        self._guard = guard
        self._inner = inner
        self._owns_inner = owns_inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve *host* with the wrapped resolver and keep the allowed addresses."""
        results = await self._inner.resolve(host, port, family)
        if self._guard.host_allowed(host):
            return results
        allowed: list[ResolveResult] = []
        reasons: list[str] = []
        for result in results:
            reason = self._guard.refusal(result["host"])
            if reason is None:
                allowed.append(result)
            else:
                reasons.append(f"{result['host']} is {reason}")
        if reasons and allowed:
            logger.debug("dropped refused addresses of %s", host, extra={"host": host})
        if not allowed:
            raise BlockedTarget(host, "; ".join(reasons) or "no address")
        return allowed

    async def close(self) -> None:
        """Close the wrapped resolver when this one created it."""
        if self._owns_inner:
            await self._inner.close()

    def __repr__(self) -> str:
        return f"GuardedResolver({self._guard!r}, {self._inner!r})"


def guarded_connector(
    guard: TargetGuard, resolver: AbstractResolver | None = None, **options: Any
) -> tuple[aiohttp.TCPConnector, GuardedResolver]:
    """Return a connector that only reaches what *guard* allows, and its resolver.

    Everything calsync sends over HTTP (feeds, webhooks) connects through one of
    these. The caller closes the resolver after the session; *resolver* (default:
    aiohttp's) is closed with it only when it was not passed in.
    """
    inner = resolver if resolver is not None else DefaultResolver()
    guarded = GuardedResolver(guard, inner, owns_inner=resolver is None)
    return aiohttp.TCPConnector(resolver=guarded, **options), guarded
