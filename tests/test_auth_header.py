"""The Authorization parser and the challenge builder: known values, then
hypothesis (only AuthHeaderError escapes; time stays linear in length)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.auth.errors import AuthHeaderError
from appliance.auth.header import (MAX_HEADER_CHARS, format_challenge, parse_authorization,
                                   quote)

FFMPEG = ('Digest username="alice", realm="kvod", nonce="19a-0f3c-ab", '
          'uri="rtsp://127.0.0.1:8554/film", response="8ca523f5e9506fed4657c9700eebdbec", '
          'algorithm="MD5", cnonce="5ed0d4d9a9b3e8bd", nc=00000001, qop="auth"')
GSTREAMER = ('Digest username="alice", realm="kvod", nonce="19a-0f3c-ab", '
             'uri="rtsp://127.0.0.1:8554/film", response="0123456789abcdef0123456789abcdef"')


def test_ffmpeg_and_gstreamer_forms():
    creds = parse_authorization(FFMPEG)
    assert creds.scheme == "digest"
    assert creds.params["nc"] == "00000001" and creds.params["qop"] == "auth"
    assert creds.params["uri"] == "rtsp://127.0.0.1:8554/film"
    assert "qop" not in parse_authorization(GSTREAMER).params


@pytest.mark.parametrize("value, params", [
    ('Digest a="x\\"y", B=tok', {"a": 'x"y', "b": "tok"}),
    ("Digest  a = 1 ,, b=2 ,", {"a": "1", "b": "2"}),
    ('digest a=""', {"a": ""}),
    ('Digest a="\\\\"', {"a": "\\"}),
])
def test_params(value, params):
    assert parse_authorization(value).params == params


def test_basic_token68():
    creds = parse_authorization("Basic YWxpY2U6d29uZGVy")
    assert (creds.scheme, creds.token68, creds.params) == ("basic", "YWxpY2U6d29uZGVy", {})
    assert parse_authorization("Basic YQ==").token68 == "YQ=="


@pytest.mark.parametrize("value", [
    "", " ", "=x", 'Digest a="open', 'Digest a=1 b=2',
    "Digest a=1, a=2", 'Digest a="\x01"', "Digest, a=1", "Digest\x00a=1",
    "Digest " + ", ".join(f"p{i}=1" for i in range(40)),
    "Digest a=" + "x" * MAX_HEADER_CHARS,
])
def test_malformed(value):
    with pytest.raises(AuthHeaderError):
        parse_authorization(value)


def test_challenge_round_trips():
    value = format_challenge("Digest", [("realm", 'k"v\\d'), ("nonce", "n-1"),
                                        ("algorithm", "MD5"), ("stale", "true")])
    assert value == 'Digest realm="k\\"v\\\\d", nonce="n-1", algorithm=MD5, stale=true'
    assert parse_authorization(value).params == {"realm": 'k"v\\d', "nonce": "n-1",
                                                 "algorithm": "MD5", "stale": "true"}
    assert quote("a") == '"a"'


_pieces = st.sampled_from(['Digest ', 'Basic ', 'username=', '"', '\\', ',', ' ', '=',
                           'nc=00000001', 'qop=auth', 'x', 'é', '\t', '\x00', '\r\n'])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=60).map("".join)))
def test_only_its_own_error_escapes(value):
    try:
        creds = parse_authorization(value)
    except AuthHeaderError:
        return
    assert creds.scheme and creds.scheme == creds.scheme.lower()
    assert all(k == k.lower() for k in creds.params)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
                       st.text(st.characters(min_codepoint=32, max_codepoint=0x2ff,
                                             blacklist_characters="\x7f"), max_size=20),
                       max_size=10))
def test_formatted_params_parse_back(params):
    value = format_challenge("Digest", sorted(params.items()), unquoted=frozenset())
    assert parse_authorization(value).params == params


def test_a_bare_token_is_token68_not_a_parameter():
    # RFC 7235: "Digest a=" is a token68; the gate then finds no username
    assert parse_authorization("Digest a=").token68 == "a="
