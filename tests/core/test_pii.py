"""core/pii.py: datatrove 0.10.1's PIIFormatter on its own test vectors, the tricky cases (e-mails in URLs, version
numbers, IPv6 zero compression, private ranges) and deterministic placeholders. (On the shared corpus against
datatrove itself: benchmarks/bench_pii.py.)"""

import polars as pl
import pytest

from curation_assets.core.pii import (
    EMAIL_PLACEHOLDERS,
    IPV4_PLACEHOLDERS,
    IPV6_PLACEHOLDERS,
    public_ipv4,
    public_ipv6,
    redact,
    redact_texts,
)


def red(text: str) -> str:
    """`text` with datatrove's test placeholders (one each: no hash choice)."""
    return redact(text, ("EMAIL",), ("IP",), ("IP6",))[0]


# datatrove 0.10.1 tests/pipeline/filters/test_pii_removal.py (Apache-2.0), inputs and expected outputs verbatim
DT_IP_IN = """It correctly doesn't match this invalid ips:
999.999.999.999.
108.0.0.01
0.1.2.3
00.0000.00.00
192.168.l.1
912.456.123.123
.3.3.3.0
192.168.o.0

It doesn't match local IPs:

172.16.0.9
172.16.4.1
172.17.1.1
127.0.0.2
10.0.1.5
10.0.0.1
10.155.155.155
10.255.255.254
172.16.0.4
172.16.0.1
172.17.1.1
172.31.254.254
192.168.1.2
192.168.254.0

valid ips:
163.36.107.25
114.35.103.54
57.120.21.121
13.83.69.70
29.116.31.158
193.163.229.23
211.160.67.46
4.132.211.142
214.70.227.4
35.88.121.75"""
# the same text with `.3.3.3.0` -> `.IP` and each of the ten valid IPs -> `IP`
DT_IP_OUT = (
    DT_IP_IN.rsplit("\nvalid ips:\n", 1)[0].replace(".3.3.3.0", ".IP") + "\nvalid ips:\n" + "\n".join(["IP"] * 10)
)
DT_EMAIL_IN = """List of Valid Email Addresses

email@example.com
firstname.lastname@example.com
email@subdomain.example.com
firstname+lastname@example.com
email@123.123.123.123
email@[123.123.123.123]
"email"@example.com
1234567890@example.com
email@example-one.com
_______@example.com
email@example.name
email@example.museum
email@example.co.jp
firstname-lastname@example.com
NAME@MYSITE.COM

List of Strange Valid Email Addresses

much.”more\\ unusual”@example.com
very.unusual.”@”.unusual.com@example.com
very.”(),:;<>[]”.VERY.”very@\\ "very”.unusual@strange.example.com

List of Invalid Email Addresses

plainaddress
#@%^%#$@#$@#.com
@example.com
Joe Smith <email@example.com>
email.example.com
email@example@example.com
.email@example.com
email.@example.com
email..email@example.com
あいうえお@example.com
email@example.com (Joe Smith)
email@example
email@-example.com
email@example.web
email@111.222.333.44444
email@example..com
Abc..123@example.com

List of Strange Invalid Email Addresses

”(),:;<>[\\]@example.com
just”not”right@example.com
this\\ is"really"not\\allowed@example.com"""
DT_EMAIL_OUT = """List of Valid Email Addresses

EMAIL
EMAIL
EMAIL
EMAIL
EMAIL
EMAIL
"email"@example.com
EMAIL
EMAIL
EMAIL
EMAIL
EMAIL
EMAIL
EMAIL
EMAIL

List of Strange Valid Email Addresses

much.”more\\ unusual”@example.com
very.unusual.”@”.EMAIL
very.”(),:;<>[]”.VERY.”very@\\ "very”.EMAIL

List of Invalid Email Addresses

plainaddress
#@%^%#$@#$@#.com
@example.com
Joe Smith <EMAIL>
email.example.com
email@EMAIL
.EMAIL
email.@example.com
email..EMAIL
あいうえお@example.com
EMAIL (Joe Smith)
email@example
email@-example.com
EMAIL
EMAIL
email@example..com
Abc..EMAIL

List of Strange Invalid Email Addresses

”(),:;<>[\\]@example.com
just”not”EMAIL
this\\ is"really"not\\EMAIL"""


def test_datatrove_own_test_vectors():
    assert red(DT_IP_IN) == DT_IP_OUT
    assert red(DT_EMAIL_IN) == DT_EMAIL_OUT


TRICKY = [
    # e-mails inside URLs: the local part may hold `/`, `=` and `.`, and `:` ends it (datatrove's regex)
    ("https://user:secret@mail.example.com/inbox", "https://user:EMAIL/inbox"),
    ("<a href=mailto:jane.doe@example.org?subject=hi>", "<a href=mailto:EMAIL?subject=hi>"),
    ("http://example.com/path/a=b@host.org", "http://EMAIL"),
    ("https://example.com/@handle/status", "https://example.com/@handle/status"),  # no domain after the @
    # numbers that look like IPs: datatrove's IPv4 regex has no boundaries and 1.2.3.4 is public (APNIC)
    ("upgrade to version 1.2.3.4 today", "upgrade to version IP today"),
    ("build 11.2.3.4.5", "build IP.5"),
    ("release 10.0.0.1", "release 10.0.0.1"),  # 10/8 is private
    ("pi 3.14.15.92", "pi IP"),
    # private, loopback, shared, documentation and link-local ranges stay
    ("10.1.2.3 192.168.0.1 172.16.5.4 127.0.0.1 100.64.0.1 192.0.2.1 169.254.1.1", None),
    ("dns 8.8.8.8 and 1.1.1.1", "dns IP and IP"),
    # IPv6: zero compression expanded by ipaddress; documentation, link-local, loopback and ULA stay
    ("resolver 2606:4700:4700::1111 answers", "resolver IP6 answers"),
    ("docs use 2001:db8::1 and 2001:DB8:0:0:0:0:0:1", None),
    ("fe80::1%eth0 ::1 fd12:3456:789a::1 ::", None),
    ("full form 2a00:1450:4001:0829:0000:0000:0000:200e.", "full form IP6."),
    ("[2a00:1450:4001:829::200e]:443", "[IP6]:443"),
    ("prefix 2001:4860:4860::8888/64", "prefix IP6/64"),
    ("ends 2606:4700:4700::1111: then", "ends IP6: then"),  # a colon after the address is not part of it
    ("odd 2606:4700::1111:g", "odd IP6:g"),
    ("6to4 is 2002::/16, 2000::/3 is unicast", None),  # networks written as their prefix name no host
    # not addresses: code, times, MACs, hex words outside the global unicast space 2000::/3
    ("std::map<int> a::b dead::beef cafe:babe:f00d 12:30:45 00:1A:2B:3C:4D:5E", None),
    ("x2606:4700::1111 2606:4700::1111z", None),  # inside a longer token
]


@pytest.mark.parametrize("text, expected", TRICKY)
def test_tricky_cases(text, expected):
    assert red(text) == (text if expected is None else expected)


def test_the_batch_prefilter_never_skips_a_text_redact_would_change():
    """`redact_texts` sends only candidate texts through the Python pass: the same output as `redact` on each."""
    cases = [c[0] for c in TRICKY] + DT_IP_IN.splitlines() + DT_EMAIL_IN.splitlines()
    out = redact_texts(pl.Series(cases), ("EMAIL",), ("IP",), ("IP6",))["text"].to_list()
    assert out == [red(t) for t in cases]


def test_validators_are_ipaddress_rules():
    assert public_ipv4("1.2.3.4") and not public_ipv4("108.0.0.01")  # leading zeros: ipaddress refuses
    assert public_ipv4("2.0.0.1") and not public_ipv4("0.1.2.3")  # "version 2.0.0.1" is redacted, as datatrove does
    assert public_ipv6("2606:4700:4700::1111") and not public_ipv6("2001:db8::1")
    assert not public_ipv6("dead::beef")  # global to ipaddress (unallocated), outside 2000::/3


def test_counts_and_kinds_turned_off():
    text = "write to a@example.com or b@example.com from 8.8.8.8 or 2606:4700:4700::1111"
    out, emails, ips = redact(text)
    assert (emails, ips) == (2, 2)
    assert "@example.com" in out and "8.8.8.8" not in out and "2606:4700" not in out
    assert redact(text, emails=None)[1:] == (0, 2) and "a@example.com" in redact(text, emails=None)[0]
    assert redact(text, ipv4=None, ipv6=None)[1:] == (2, 0)


def test_placeholders_are_a_function_of_the_address():
    """One address, one placeholder, whatever else the text or the batch holds (datatrove's counter would cycle)."""
    one = redact("a@x.org b@y.org a@x.org")[0].split()
    assert one[0] == one[2] and {*one} <= set(EMAIL_PLACEHOLDERS)
    texts = [f"host {i}.{i}.{i}.{i} and 8.8.8.8" for i in range(20, 60)]  # public addresses
    batch = redact_texts(pl.Series(texts))
    alone = [redact(t)[0] for t in texts]
    assert batch["text"].to_list() == alone
    assert {t.split()[-1] for t in alone} == {alone[0].split()[-1]}  # 8.8.8.8 always gets the same one
    assert len({t.split()[1] for t in alone} - set(IPV4_PLACEHOLDERS)) == 0
    assert len({t.split()[1] for t in alone}) > 1  # different addresses spread over the placeholders
    assert redact("2606:4700:4700::1111")[0] in IPV6_PLACEHOLDERS


def test_redact_texts_counts_per_text_and_keeps_nulls():
    out = redact_texts(pl.Series(["no pii here", None, "a@b.co 9.9.9.9 9.9.9.9", "10.0.0.1"]))
    assert out.schema == pl.Schema({"text": pl.String, "pii_emails": pl.Int32, "pii_ips": pl.Int32})
    assert out["pii_emails"].to_list() == [0, 0, 1, 0] and out["pii_ips"].to_list() == [0, 0, 2, 0]
    assert out["text"][0] == "no pii here" and out["text"][1] is None and out["text"][3] == "10.0.0.1"
    assert redact_texts(pl.Series([], dtype=pl.String)).height == 0
