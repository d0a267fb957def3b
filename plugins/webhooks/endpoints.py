"""Which partner endpoints the kernel may call: the SSRF guard.

A subscription URL must be ``http`` or ``https``, name a host and carry no credentials
(``user:password@``). Unless ``allow_private_networks`` is set (tests and the bench,
whose receivers listen on loopback), the host must also be public: an address literal,
or every address its name resolves to, must not be loopback, private, link-local,
multicast, reserved, unspecified or otherwise non-global (stdlib :mod:`ipaddress`;
an IPv4-mapped or 6to4 (``2002::/16``) IPv6 address is judged as the IPv4 address it
carries, which a 6to4 tunnel would reach). The check runs twice:

* when a subscription is created or its URL changed: a refusal is a 422 field error
  on ``url``. A name that does not resolve yet is accepted (the second check applies);
* when a delivery is sent, against DNS rebinding: the worker's HTTP connector resolves
  through :class:`GuardedResolver`, so it connects only to the addresses that were
  checked (a name now resolving to a private address fails the attempt, which is
  retried on the schedule), and an address literal is checked again by
  :meth:`EndpointGuard.literal_refusal` (the switch may have been turned off since).
  Redirects are never followed.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

SCHEMES = ("http", "https")
NON_PUBLIC = "must not point to a non-public address"
#: ``ipaddress`` properties that make an address unfit for a partner endpoint, with
#: how a refusal names them, in the order they are tested.
_NOT_PUBLIC = (
    ("is_loopback", "a loopback address"),
    ("is_unspecified", "the unspecified address"),
    ("is_link_local", "a link-local address"),
    ("is_multicast", "a multicast address"),
    ("is_private", "a private address"),
    ("is_reserved", "a reserved address"),
)


class UnsafeAddress(OSError):
    """A name resolved to an address the kernel must not call: an ``OSError``
    (``EACCES``, ``strerror`` the reason), so aiohttp reports it as a failed
    connection, ``ClientConnectorDNSError``."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)


def address_refusal(address: IPv4Address | IPv6Address) -> str | None:
    """Why ``address`` is not public (``"127.0.0.1, a loopback address"``), or None;
    an IPv4-mapped or 6to4 address is judged by the IPv4 address it carries."""
    judged = address
    if isinstance(address, IPv6Address):
        judged = address.ipv4_mapped or address.sixtofour or address
    for test, kind in _NOT_PUBLIC:
        if getattr(judged, test):
            return f"{address}, {kind}"
    if not judged.is_global:
        return f"{address}, not a public address"
    return None


@lru_cache(maxsize=4096)
def _literal(host: str) -> IPv4Address | IPv6Address | None:
    """``host`` as an address when it is an address literal (cached: the worker asks
    once per endpoint and batch), else None."""
    try:
        return ip_address(host)
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner``; raises :class:`UnsafeAddress` when any address of the
    name is not public (one private address among public ones is enough to refuse)."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            reason = address_refusal(ip_address(result["host"]))
            if reason is not None:
                raise UnsafeAddress(f"{host} resolves to {reason}")
        return found

    async def close(self) -> None:
        await self._inner.close()


class EndpointGuard:
    """The module's rules for one plugin configuration; ``resolver`` makes the DNS
    resolver both checks use (aiohttp's threaded ``getaddrinfo`` by default; tests
    pass a fake one)."""

    def __init__(
        self,
        allow_private_networks: bool,
        resolver: Callable[[], AbstractResolver] = ThreadedResolver,
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self.resolver = resolver

    async def refusal(self, url: str) -> str | None:
        """Why the kernel must not call ``url`` (a message for the ``url`` field error),
        or None: scheme, credentials, then (unless private networks are allowed) the
        host's addresses as resolved now."""
        parsed = URL(url)
        if parsed.scheme not in SCHEMES:
            return "must be an http or https URL"
        if parsed.user is not None or parsed.password is not None:
            return "must not contain credentials"
        if not parsed.host:
            return "must name a host"
        if self.allow_private_networks:
            return None
        if (address := _literal(parsed.host)) is not None:
            reason = address_refusal(address)
            return None if reason is None else f"{NON_PUBLIC} ({reason})"
        resolver = GuardedResolver(self.resolver())
        try:
            await resolver.resolve(parsed.host, parsed.port or 0, socket.AF_UNSPEC)
        except UnsafeAddress as exc:
            return f"{NON_PUBLIC} ({exc.strerror})"
        except OSError:
            return None  # not resolvable yet: checked again when delivering
        finally:
            await resolver.close()
        return None

    def literal_refusal(self, url: str | URL) -> str | None:
        """At delivery: why ``url``, whose host is an address literal, must not be
        called (``"Refused to call 10.0.0.7, a private address"``), or None (names are
        checked by the connector's :meth:`connector_resolver`)."""
        if self.allow_private_networks or (address := _literal(URL(url).host or "")) is None:
            return None
        reason = address_refusal(address)
        return None if reason is None else f"Refused to call {reason}"

    def connector_resolver(self) -> AbstractResolver | None:
        """The resolver of the worker's HTTP connector: None (aiohttp's default) when
        private networks are allowed, else a :class:`GuardedResolver`."""
        return None if self.allow_private_networks else GuardedResolver(self.resolver())
