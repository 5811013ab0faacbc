"""Callback URL rules (SSRF guard), pure: checked at submit time and again at connect time."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from core.domain.errors import InvalidInput


def check_callback_url(url: str, *, require_https: bool, allow_loopback: bool) -> tuple[str, str, int]:
    """Validate a callback URL's form; return (scheme, host, port). Raises InvalidInput."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"callback_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidInput("callback_url must be an http(s) URL")
    host = parts.hostname or ""
    if parts.scheme == "http" and require_https and not (allow_loopback and _is_loopback_name(host)):
        raise InvalidInput("callback_url must use https")
    if not host:
        raise InvalidInput("callback_url has no host")
    if parts.username or parts.password:
        raise InvalidInput("callback_url must not carry credentials")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        check_address(str(ip), allow_loopback=allow_loopback)
    elif host in ("localhost",) or host.endswith(".localhost") or host.endswith(".internal"):
        if not allow_loopback:
            raise InvalidInput(f"callback_url host {host!r} is not a public address")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def _is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(address: str, *, allow_loopback: bool) -> None:
    """Refuse private, loopback, link-local (cloud metadata), CGNAT, ULA, multicast, reserved
    and IPv4-mapped forms of those. Loopback passes only when explicitly allowed."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback and allow_loopback:
        return
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        raise InvalidInput(f"callback_url resolves to a non-public address ({ip})")
