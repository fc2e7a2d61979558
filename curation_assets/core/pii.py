"""PII redaction: datatrove's `PIIFormatter` (the last step of FineWeb's recipe): e-mail addresses and public IP
addresses in a text replaced by placeholders.

The e-mail and IPv4 regexes are datatrove 0.10.1's, applied in its order (e-mails, then IPv4) with its rule for an
IPv4 match: replaced iff `ipaddress` parses it and calls it global (private, loopback, link-local, shared,
documentation and other reserved ranges are left alone; so is `108.0.0.01`, which `ipaddress` refuses). datatrove's
IPv4 regex has no word boundaries, so it also replaces a public-looking run of four numbers inside a longer one
(`version 1.2.3.4` -> `version <ip>`, and `11.2.3.4.5` -> `<ip>.5`): we do the same (parity, benchmarks/bench_pii.py).
datatrove has no IPv6 rule; ours (run last) takes a candidate outside a longer token of hex digits and colons, lets
`ipaddress` expand it (zero compression `::` included) and replaces it iff it is global and in 2000::/3, the global
unicast space (RFC 4291 §2.4): `2001:db8::1` (documentation), `fe80::1` and `::1` stay, and so do hex-word pairs of
code such as `dead::beef`, which `ipaddress` alone would call global; a network written as its prefix (`2002::/16`)
names no host and stays too. An IPv4 inside an IPv6 (`::ffff:1.2.3.4`) is the IPv4 rule's.

datatrove cycles through its placeholders with a counter that runs across documents, so a document's output depends
on the documents before it on the same worker. Ours is a function of the matched text alone: placeholder
`seeded_hash(match) mod k`, so the output is the same whatever the batching, and one address keeps one placeholder.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

import polars as pl

from curation_assets.core.frames import seeded_hash

EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])"
)
IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)")
IPV6 = re.compile(r"(?<![0-9A-Za-z_:.])[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,8}(?![0-9A-Za-z_])")
_PREFIX_LENGTH = re.compile(r"/(\d{1,3})(?!\d)")
# Which texts can hold a replacement, decided per batch in polars (Rust regex: leftmost-first like Python's `re`)
# before the per-text Python pass: the e-mail regex without its leading `\b`, datatrove's IPv4 regex itself (its
# candidates validated), and the IPv6 one without its look-arounds (each candidate and its prefixes ending before a
# colon validated: what Python's backtracking could settle on). Each is a superset of what `redact` replaces.
_EMAIL_ANYWHERE = EMAIL.pattern.removeprefix(r"\b")
_IPV6_CANDIDATE = r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,8}"
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# datatrove 0.10.1's defaults: example.com / example.org are reserved for examples (RFC 2606); the IPv4 addresses
# "did not respond to ping requests at the time the list was created"
EMAIL_PLACEHOLDERS = ("email@example.com", "firstname.lastname@example.org")
IPV4_PLACEHOLDERS = (
    "22.214.171.124",
    "126.96.36.199",
    "188.8.131.52",
    "184.108.40.206",
    "220.127.116.11",
    "18.104.22.168",
)
# the IPv6 documentation prefix (RFC 3849): never a real host, and left alone if redaction runs again
IPV6_PLACEHOLDERS = ("2001:db8::1", "2001:db8:85a3::8a2e:370:7334")


def public_ipv4(text: str) -> bool:
    """datatrove's `public_ip_validator`: `ipaddress` parses it and it is global."""
    try:
        return ipaddress.IPv4Address(text).is_global
    except ValueError:
        return False


def public_ipv6(text: str) -> bool:
    try:
        ip = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return ip.is_global and ip in _GLOBAL_UNICAST


def _placeholder(options: Sequence[str], found: str) -> str:
    return options[seeded_hash(found) % len(options)] if len(options) > 1 else options[0]


def _email(m: re.Match) -> tuple[str, str]:
    return m.group(0), ""


def _ipv4(m: re.Match) -> tuple[str, str] | None:
    return (m.group(0), "") if public_ipv4(m.group(0)) else None


def _ipv6(m: re.Match) -> tuple[str, str] | None:
    """(address, what follows it in the match) to replace, or None. A colon right after an address is not part of it
    (`... 2606:4700::1111: the resolver`); a network written as its prefix (`2002::/16`: no bit set past the prefix
    length) names a range, not a host, and stays."""
    found, tail = m.group(0), ""
    if found.endswith(":") and not found.endswith("::"):
        found, tail = found[:-1], ":"
    if not public_ipv6(found):
        return None
    if not tail and (length := _PREFIX_LENGTH.match(m.string, m.end())) and int(length.group(1)) <= 128:
        if int(ipaddress.IPv6Address(found)) & ((1 << (128 - int(length.group(1)))) - 1) == 0:
            return None
    return found, tail


def _replace(pattern: re.Pattern, text: str, options: Sequence[str], check: Callable[[re.Match], tuple | None]):
    """(text with each match of `pattern` that `check` accepts replaced by a placeholder, number replaced)."""
    n = 0

    def sub(m: re.Match) -> str:
        nonlocal n
        hit = check(m)
        if hit is None:
            return m.group(0)
        n += 1
        return _placeholder(options, hit[0]) + hit[1]

    return pattern.sub(sub, text), n


def redact(
    text: str,
    emails: Sequence[str] | None = EMAIL_PLACEHOLDERS,
    ipv4: Sequence[str] | None = IPV4_PLACEHOLDERS,
    ipv6: Sequence[str] | None = IPV6_PLACEHOLDERS,
) -> tuple[str, int, int]:
    """(`text` with e-mails, public IPv4 and public IPv6 addresses replaced, e-mails replaced, IPs replaced). A
    placeholder tuple of None turns that kind off."""
    n_email = n_ip = n_ip6 = 0
    if emails:
        text, n_email = _replace(EMAIL, text, emails, _email)
    if ipv4:
        text, n_ip = _replace(IPV4, text, ipv4, _ipv4)
    if ipv6:
        text, n_ip6 = _replace(IPV6, text, ipv6, _ipv6)
    return text, n_email, n_ip + n_ip6


def _any_candidate(texts: pl.Series, pattern: str, valid: Callable[[str], bool]) -> pl.Series:
    """Per text: does `pattern` (polars) find a candidate `valid` accepts (each distinct candidate checked once)."""
    found = pl.DataFrame({"c": texts.str.extract_all(pattern)}).with_row_index("_i").explode("c").drop_nulls("c")
    ok = {c for c in found["c"].unique() if valid(c)}
    rows = found.filter(pl.col("c").is_in(list(ok)))["_i"].unique()
    return pl.int_range(len(texts), eager=True).is_in(rows.implode())


def _public_ipv6_prefix(candidate: str) -> bool:
    parts = candidate.split(":")
    return any(public_ipv6(":".join(parts[:k])) for k in range(len(parts), 2, -1))


def redact_texts(
    texts: pl.Series,
    emails: Sequence[str] | None = EMAIL_PLACEHOLDERS,
    ipv4: Sequence[str] | None = IPV4_PLACEHOLDERS,
    ipv6: Sequence[str] | None = IPV6_PLACEHOLDERS,
) -> pl.DataFrame:
    """`redact` over a column: `text` (null stays null), `pii_emails`, `pii_ips` (Int32, replacements per text). Only
    the texts that can hold a replacement (vectorised tests, see `_EMAIL_ANYWHERE`) go through the Python pass."""
    texts = texts.cast(pl.String)
    maybe = pl.Series([False] * len(texts), dtype=pl.Boolean)
    if emails:
        maybe |= texts.str.contains(_EMAIL_ANYWHERE).fill_null(False)
    if ipv4:
        maybe |= _any_candidate(texts, IPV4.pattern, public_ipv4)
    if ipv6:
        maybe |= _any_candidate(texts, _IPV6_CANDIDATE, _public_ipv6_prefix)
    out, n_emails, n_ips = texts.to_list(), [0] * len(texts), [0] * len(texts)
    for i in maybe.arg_true().to_list():
        out[i], n_emails[i], n_ips[i] = redact(out[i], emails, ipv4, ipv6)
    return pl.DataFrame(
        {"text": out, "pii_emails": n_emails, "pii_ips": n_ips},
        schema={"text": pl.String, "pii_emails": pl.Int32, "pii_ips": pl.Int32},
    )
