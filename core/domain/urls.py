"""Callback URL rules (SSRF guard), pure: one parser used at submit time and again at connect time.

``check_callback_url`` is the only way a callback URL is read. It refuses what could reach
something other than a public receiver, whatever form the address is written in:

* whitespace, control characters and backslashes anywhere (they split parsers apart);
* a host that *is* an IPv4 address in any form ``inet_aton``/WHATWG accept (``2852039166``,
  ``0x7f000001``, ``017700000001``, ``127.1``) is read as that address;
* other hosts are converted to punycode (``idna``, UTS #46) and must follow DNS label rules
  (1–63 characters of ``a-z0-9-`` per label, 253 in all, no empty label);
* every literal address goes through ``address_problem``, the one address rule, which also
  looks inside IPv4-mapped/compatible, 6to4, Teredo and NAT64 forms.

It returns a ``CallbackUrl`` whose ``url`` is the normalised form: submit stores that, the
connect-time client sends to it, so what was checked is what is used.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import idna

from core.domain.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_NON_PUBLIC_NAMES = ("localhost", "localhost.localdomain")
_NON_PUBLIC_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
# Keep what RFC 3986 allows in a path/query as it is (and '%' so nothing is encoded twice).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"

_V4_6TO4_RELAY = ipaddress.ip_network("192.88.99.0/24")
_V4_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_V6_6TO4 = ipaddress.ip_network("2002::/16")
_V6_TEREDO = ipaddress.ip_network("2001::/32")
_V6_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V6_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_V6_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class CallbackUrl:
    """A checked callback URL. ``host`` is punycode or a canonical address (no brackets)."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line
    url: str  # the normalised URL: store this one

    @property
    def address(self) -> IPAddress | None:
        """The literal address when the host is one (no DNS needed), else None."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def check_callback_url(url: str, *, require_https: bool, allow_loopback: bool) -> CallbackUrl:
    """Parse, normalise and check a callback URL. Pure (no DNS). Raises InvalidInput (HTTP 422).

    A name passing here still has to resolve to public addresses: the connect-time client
    checks each resolved address with ``check_address``.
    """
    if not isinstance(url, str) or not url:
        raise InvalidInput("callback_url must be a non-empty string")
    _refuse_invisible_characters(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"callback_url is not a valid URL: {exc}") from None
    scheme = parts.scheme
    if scheme not in ("https", "http"):
        raise InvalidInput("callback_url must be an http(s) URL")
    netloc = parts.netloc
    if "@" in netloc:
        raise InvalidInput("callback_url must not carry credentials")
    raw_host, port = _split_host_port(netloc, default=443 if scheme == "https" else 80)
    if not raw_host:
        raise InvalidInput("callback_url has no host")
    address, host = _parse_host(raw_host)
    if address is not None:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem:
            shown = "" if raw_host.strip("[]").lower() == str(address) else f" ({raw_host!r})"
            raise InvalidInput(f"callback_url host is a non-public address: {address}{shown}, {problem}")
    elif not allow_loopback and (host in _NON_PUBLIC_NAMES or host.endswith(_NON_PUBLIC_SUFFIXES)):
        raise InvalidInput(f"callback_url host {host!r} is not a public address")
    elif not allow_loopback and "." not in host:
        # a single label resolves only through the resolver's search domains: an internal name
        raise InvalidInput(f"callback_url host {host!r} is not a public name (it has no domain)")
    loopback = (address is not None and address.is_loopback) or host in _NON_PUBLIC_NAMES
    if scheme == "http" and require_https and not (allow_loopback and loopback):
        raise InvalidInput("callback_url must use https")
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    shown_host = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    authority = shown_host if port == default_port else f"{shown_host}:{port}"
    return CallbackUrl(scheme, host, port, target, f"{scheme}://{authority}{target}")


def check_address(address: str, *, allow_loopback: bool) -> None:
    """Refuse a (resolved) address that is not a public unicast address. Raises InvalidInput."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        raise InvalidInput(f"callback_url resolves to something that is not an address ({address!r})") from None
    problem = address_problem(ip, allow_loopback=allow_loopback)
    if problem:
        raise InvalidInput(f"callback_url resolves to a non-public address: {ip}, {problem}")


def address_problem(ip: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why ``ip`` must not receive callbacks, or None. The one address rule.

    Loopback passes only when allowed (embedded stack, tests). IPv4-mapped and -compatible
    forms are refused outright; 6to4, Teredo and NAT64 are refused when the IPv4 address they
    carry is not public.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"IPv4-mapped form of {ip.ipv4_mapped}"
        if ip in _V6_COMPATIBLE and int(ip) > 1:
            return f"IPv4-compatible form of {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)}"
        if ip in _V6_NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            problem = address_problem(inner, allow_loopback=False)
            return f"NAT64 form of {inner}, {problem}" if problem else None
        if ip in _V6_NAT64_LOCAL:
            return "local-use NAT64 prefix (64:ff9b:1::/48)"
        if ip in _V6_6TO4 and ip.sixtofour is not None:
            problem = address_problem(ip.sixtofour, allow_loopback=False)
            if problem:
                return f"6to4 form of {ip.sixtofour}, {problem}"
        if ip in _V6_TEREDO and ip.teredo is not None:
            for inner in ip.teredo:
                problem = address_problem(inner, allow_loopback=False)
                if problem:
                    return f"Teredo form carrying {inner}, {problem}"
        if ip.is_site_local:
            return "site-local"
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_link_local:
        return "link-local (includes cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in _V4_CGNAT:
            return "carrier-grade NAT (100.64.0.0/10)"
        if ip in _V4_6TO4_RELAY:
            return "6to4 relay anycast (192.88.99.0/24)"
    elif ip in ipaddress.IPv6Network("fc00::/7"):
        return "unique local (fc00::/7)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally reachable"
    return None


# --- parsing helpers -------------------------------------------------------------------


def _refuse_invisible_characters(url: str) -> None:
    for i, ch in enumerate(url):
        if ch.isspace() or unicodedata.category(ch) == "Cc":
            raise InvalidInput(f"callback_url contains whitespace or a control character (U+{ord(ch):04X} at {i})")
        if ch == "\\":
            raise InvalidInput("callback_url contains a backslash")


def _split_host_port(netloc: str, *, default: int) -> tuple[str, int]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise InvalidInput("callback_url has an unterminated IPv6 address")
        host, rest = netloc[: end + 1], netloc[end + 1:]
        if rest and not rest.startswith(":"):
            raise InvalidInput("callback_url has characters after its IPv6 address")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = netloc.partition(":")
        if ":" in port_text:
            raise InvalidInput("callback_url has an IPv6 address without brackets")
    if not port_text:
        return host, default
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or not 0 < int(port_text) < 65536:
        raise InvalidInput(f"callback_url port {port_text!r} is not a port number (1-65535)")
    return host, int(port_text)


def _parse_host(raw: str) -> tuple[IPAddress | None, str]:
    """(address, canonical host). An address when the host is one in any accepted form."""
    if raw.startswith("["):
        inner = raw[1:-1]
        if "%" in inner:
            raise InvalidInput("callback_url must not carry an IPv6 zone id")
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidInput(f"callback_url host {raw!r} is not a valid IPv6 address") from None
        return ip6, str(ip6)
    if "%" in raw:
        raise InvalidInput("callback_url host must not be percent-encoded")
    if raw.isascii():
        host = raw.lower()
    else:
        try:
            host = idna.encode(raw, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise InvalidInput(f"callback_url host {raw!r} is not a valid internationalised name: {exc}") from None
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]  # the root label
    labels = host.split(".")
    if _is_ipv4_number(labels[-1]):  # WHATWG "ends in a number": the host must be an IPv4 address
        ip4 = _ipv4_from_parts(labels)
        if ip4 is None:
            raise InvalidInput(f"callback_url host {raw!r} is neither a valid IPv4 address nor a name")
        return ip4, str(ip4)
    _check_labels(raw, host, labels)
    return None, host


def _is_ipv4_number(part: str) -> bool:
    return _ipv4_number(part) is not None


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 address as inet_aton/WHATWG read it: decimal, 0-octal or 0x-hex."""
    if not part or not part.isascii():
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0
    try:
        return int(part, radix) if part.isalnum() else None
    except ValueError:
        return None


def _ipv4_from_parts(labels: list[str]) -> ipaddress.IPv4Address | None:
    numbers = [n for n in map(_ipv4_number, labels) if n is not None]
    if not 1 <= len(labels) <= 4 or len(numbers) != len(labels):
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    return ipaddress.IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


def _check_labels(raw: str, host: str, labels: list[str]) -> None:
    if len(host) > 253:
        raise InvalidInput(f"callback_url host is {len(host)} characters long (at most 253)")
    for label in labels:
        if not label:
            raise InvalidInput(f"callback_url host {raw!r} has an empty label")
        if len(label) > 63:
            raise InvalidInput(f"callback_url host has a label of {len(label)} characters (at most 63)")
        if not _LDH_LABEL.match(label):
            raise InvalidInput(f"callback_url host label {label!r} may hold only letters, digits and inner hyphens")
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise InvalidInput(f"callback_url host label {label!r} is not valid punycode") from None
