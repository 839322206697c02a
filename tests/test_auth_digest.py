"""The auth room's arithmetic and files: Digest known answers (RFC 2617,
RFC 7616), Basic, the htdigest loader and the access rules."""

from __future__ import annotations

import base64
import hashlib

import pytest
from twisted.cred.credentials import calcHA1, calcHA2, calcResponse

from appliance.auth import AccessRules, HtdigestError, load_htdigest, parse_htdigest, parse_rule
from appliance.auth.digest import (DigestAnswer, decode_basic, expected_response, ha1,
                                   verify_basic, verify_digest)

# RFC 2617 section 3.5
RFC2617 = DigestAnswer(username="Mufasa", realm="testrealm@host.com",
                       nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",
                       response="6629fae49393a05397450978507c4ef1", qop="auth", nc="00000001",
                       cnonce="0a4f113b")
# RFC 7616 section 3.9.1
RFC7616 = dict(username="Mufasa", realm="http-auth@example.org",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html",
               qop="auth", nc="00000001", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")


def test_rfc2617_example():
    stored = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert expected_response(RFC2617, stored, "GET") == RFC2617.response
    assert verify_digest(RFC2617, stored, "GET")
    assert not verify_digest(RFC2617, stored, "PUT")
    assert not verify_digest(RFC2617, ha1("MD5", "Mufasa", "testrealm@host.com", "x"), "GET")


@pytest.mark.parametrize("algorithm, response", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_examples(algorithm, response):
    answer = DigestAnswer(response=response, algorithm=algorithm, **RFC7616)
    stored = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert verify_digest(answer, stored, "GET")
    assert verify_digest(DigestAnswer(response=response.upper(), algorithm=algorithm,
                                      **RFC7616), stored, "GET")
    assert not verify_digest(DigestAnswer(response=response[:-1] + "0", algorithm=algorithm,
                                          **RFC7616), stored, "GET")


@pytest.mark.parametrize("qop", [None, "auth"])
@pytest.mark.parametrize("algorithm", ["MD5", "MD5-SESS"])
def test_md5_agrees_with_twisted(qop, algorithm):
    # twisted.cred's digest arithmetic as an independent oracle
    nonce, cnonce, nc = "abc123", "c0ffee", "0000002a"
    answer = DigestAnswer(username="u", realm="kvod", nonce=nonce, uri="rtsp://h/t",
                          response="", algorithm=algorithm, qop=qop,
                          nc=nc if qop else None, cnonce=cnonce)
    twisted_ha1 = calcHA1(algorithm.lower().encode(), b"u", b"kvod", b"pw", nonce.encode(),
                          cnonce.encode())
    twisted_ha2 = calcHA2(b"md5", b"PLAY", b"rtsp://h/t", qop and qop.encode(), None)
    want = calcResponse(twisted_ha1, twisted_ha2, b"md5", nonce.encode(),
                        nc.encode() if qop else None, cnonce.encode() if qop else None,
                        qop and qop.encode())
    assert expected_response(answer, ha1("MD5", "u", "kvod", "pw"), "PLAY") == want.decode()


def test_basic():
    token = base64.b64encode(b"alice:s3:cret").decode()
    assert decode_basic(token) == ("alice", "s3:cret")
    assert decode_basic("!!!") is None
    assert decode_basic(base64.b64encode(b"nocolon").decode()) is None
    stored = ha1("MD5", "alice", "kvod", "s3:cret")
    assert verify_basic("alice", "s3:cret", "kvod", stored)
    assert not verify_basic("alice", "s3:creT", "kvod", stored)


# ------------------------------------------------------------ htdigest ---

def _line(user, realm, password, algorithm="MD5"):
    return f"{user}:{realm}:{ha1(algorithm, user, realm, password)}"


def test_htdigest_reads_users_and_both_algorithms(tmp_path):
    path = tmp_path / "users"
    path.write_text("# viewers\n\n" + "\n".join([
        _line("alice", "kvod", "a"), _line("alice", "kvod", "a", "SHA-256"),
        _line("bob", "kvod", "b"), _line("bob", "other", "b")]) + "\n")
    users = load_htdigest(str(path))
    assert users.ha1("alice", "kvod", "MD5") == ha1("MD5", "alice", "kvod", "a")
    assert users.ha1("alice", "kvod", "SHA-256-sess") == ha1("SHA-256", "alice", "kvod", "a")
    assert users.ha1("bob", "kvod", "SHA-256") is None
    assert users.ha1("carol", "kvod", "MD5") is None
    assert users.count("kvod") == 2 and users.algorithms("kvod") == {"MD5", "SHA-256"}


@pytest.mark.parametrize("text, says", [
    ("alice:kvod\n", ":1: expected user:realm:hash"),
    ("# c\nalice:kvod:abc\n", ":2: the hash of 'alice' is not 32"),
    ("alice:kvod:" + "g" * 32 + "\n", ":1: the hash"),
    (":kvod:" + "0" * 32 + "\n", ":1: empty user or realm"),
    ("a:k:" + "0" * 32 + "\na:k:" + "1" * 32 + "\n", ":2: 'a' in realm 'k' has a second MD5"),
    ("a:k:b:" + "0" * 32 + "\n", ":1: expected user:realm:hash, got 4"),
])
def test_htdigest_errors_name_the_line(tmp_path, text, says):
    path = tmp_path / "users"
    path.write_text(text)
    with pytest.raises(HtdigestError) as info:
        load_htdigest(str(path))
    assert str(path) in str(info.value) and says in str(info.value)


def test_htdigest_unreadable_and_not_utf8(tmp_path):
    with pytest.raises(HtdigestError, match="cannot read users file"):
        load_htdigest(str(tmp_path / "missing"))
    (tmp_path / "bin").write_bytes(b"\xff\xfe:k:" + b"0" * 32)
    with pytest.raises(HtdigestError, match="not UTF-8"):
        load_htdigest(str(tmp_path / "bin"))


def test_htdigest_matches_the_real_tool(tmp_path):
    import shutil
    import subprocess
    if shutil.which("htdigest") is None:
        pytest.skip("htdigest (apache2-utils) is not installed: make deps")
    path = tmp_path / "users"
    subprocess.run(["htdigest", "-c", str(path), "kvod", "alice"], input=b"pw\npw\n",
                   check=True, capture_output=True)
    users = parse_htdigest(path.read_text())
    assert users.ha1("alice", "kvod", "MD5") == hashlib.md5(b"alice:kvod:pw").hexdigest()


# --------------------------------------------------------------- rules ---

def test_rules_longest_prefix_wins_and_paths_are_normalised():
    rules = AccessRules.parse(["/public/ open", "/public/staff/ alice, bob", "/ any"])
    assert rules.rule_for("rtsp://h:8554/public/film").access == "open"
    assert rules.rule_for("rtsp://h/public").access == "open"
    staff = rules.rule_for("rtsp://h/public/staff/x/trackID=0")
    assert staff.users == {"alice", "bob"} and staff.allows("bob") and not staff.allows("eve")
    assert rules.rule_for("rtsp://h/publicity").access == "any"
    assert rules.rule_for("rtsp://h/public/../secret").access == "any"
    assert rules.rule_for("rtsp://h/%70ublic/x").access == "open"
    assert rules.rule_for("rtsp://h//public//staff/y").users == {"alice", "bob"}
    assert rules.rule_for("*").access == "any"


def test_no_rules_means_any_user():
    assert AccessRules().rule_for("rtsp://h/x").access == "any"


@pytest.mark.parametrize("text, says", [
    ("public open", "must start with '/'"),
    ("/x", "say who may use"),
    ("/x al:ice", "not a user name"),
])
def test_bad_rules(text, says):
    with pytest.raises(ValueError, match=says):
        parse_rule(text)


def test_two_rules_for_one_prefix():
    with pytest.raises(ValueError, match="two rules"):
        AccessRules.parse(["/a open", "/a/ any"])
