"""The RTSP gate and its nonces, sans-IO: an in-memory users file, time
as a number, a Digest client from tests/helpers/rtsp_auth.py."""

from __future__ import annotations

import base64
import logging

import pytest

from appliance.auth import AccessRules, NonceStore, RtspGate, parse_htdigest
from appliance.auth.digest import ha1
from appliance.auth.nonces import FRESH, REPLAY, STALE
from tests.helpers.rtsp_auth import challenge_params, digest_authorization

URL = "rtsp://127.0.0.1:8554/film"
REALM = "kvod"


def users(*, sha256: bool = False):
    lines = [f"alice:{REALM}:{ha1('MD5', 'alice', REALM, 'wonder')}",
             f"bob:{REALM}:{ha1('MD5', 'bob', REALM, 'builder')}"]
    if sha256:
        lines.append(f"alice:{REALM}:{ha1('SHA-256', 'alice', REALM, 'wonder')}")
    return parse_htdigest("\n".join(lines))


def gate(rules=(), **kw):
    return RtspGate(users(**kw), REALM, AccessRules.parse(list(rules)),
                    NonceStore(lifetime=60, capacity=4))


def ask(g, authorization=(), *, method="DESCRIBE", target=URL, connection="c1", now=0.0,
        secure=False):
    return g.check(method=method, target=target, authorization=list(authorization),
                   connection=connection, peer="192.0.2.7", now=now, secure=secure)


def challenge(g, **kw):
    denial = ask(g, **kw)
    assert denial.status == 401
    return [v for n, v in denial.headers if n == "WWW-Authenticate"]


def test_options_is_open_and_everything_else_is_challenged():
    g = gate()
    assert ask(g, method="OPTIONS") is None
    for method in ("DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER"):
        (value,) = challenge(g, method=method)
        params = challenge_params(value)
        assert params["realm"] == REALM and params["qop"] == "auth"
        assert params["algorithm"] == "MD5" and "stale" not in params
    assert g.challenges == 6 and sum(g.failures.values()) == 0


@pytest.mark.parametrize("qop", [True, False])
def test_right_password_passes_wrong_one_is_refused(qop, caplog):
    g = gate()
    (value,) = challenge(g)
    assert ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE", URL,
                                        qop=qop)]) is None
    caplog.set_level(logging.INFO)
    denial = ask(g, [digest_authorization(value, "alice", "wrong!pw", "DESCRIBE", URL, nc=2,
                                          qop=qop)])
    assert denial.status == 401 and denial.reason == "bad_credentials"
    assert g.failures["bad_credentials"] == 1
    (line,) = [r.getMessage() for r in caplog.records if r.name == "appliance.auth.gate"]
    assert "192.0.2.7" in line and "alice" in line and "wrong!pw" not in line


def test_unknown_user_and_foreign_realm_are_bad_credentials():
    g = gate()
    (value,) = challenge(g)
    assert ask(g, [digest_authorization(value, "carol", "x", "DESCRIBE", URL)]).status == 401
    other = value.replace(f'realm="{REALM}"', 'realm="elsewhere"')
    assert ask(g, [digest_authorization(other, "alice", "wonder", "DESCRIBE", URL)]).status \
        == 401
    assert g.failures["bad_credentials"] == 2


def test_replayed_nonce_count_is_refused():
    g = gate()
    (value,) = challenge(g)
    first = digest_authorization(value, "alice", "wonder", "DESCRIBE", URL, nc=1)
    assert ask(g, [first]) is None
    denial = ask(g, [first])
    assert denial.status == 401 and denial.reason == "replay"
    assert ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE", URL,
                                        nc=2)]) is None


def test_nonce_of_another_connection_is_stale():
    g = gate()
    (value,) = challenge(g, connection="c1")
    denial = ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE", URL)],
                 connection="c2")
    assert denial.reason == "stale"
    assert challenge_params(dict(denial.headers)["WWW-Authenticate"])["stale"] == "true"


def test_nonce_expires_unless_in_use():
    g = gate()
    (value,) = challenge(g, now=0.0)
    late = digest_authorization(value, "alice", "wonder", "DESCRIBE", URL)
    assert ask(g, [late], now=61.0).reason == "stale"
    (value,) = challenge(g, now=100.0)
    # used every 50 s, it stays valid past its first minute
    for n, now in enumerate((100.0, 150.0, 200.0, 250.0), 1):
        assert ask(g, [digest_authorization(value, "alice", "wonder", "PLAY", URL, nc=n)],
                   method="PLAY", now=now) is None
    assert ask(g, [digest_authorization(value, "alice", "wonder", "PLAY", URL, nc=9)],
               method="PLAY", now=311.0).reason == "stale"


def test_a_stale_nonce_with_a_wrong_password_is_not_called_stale():
    g = gate()
    (value,) = challenge(g, now=0.0)
    denial = ask(g, [digest_authorization(value, "alice", "nope", "DESCRIBE", URL)], now=99.0)
    assert denial.reason == "bad_credentials"
    assert "stale" not in challenge_params(dict(denial.headers)["WWW-Authenticate"])


def test_sha256_is_offered_first_when_users_have_it():
    g = gate(sha256=True)
    sha, md5 = challenge(g)
    assert challenge_params(sha)["algorithm"] == "SHA-256"
    assert challenge_params(md5)["algorithm"] == "MD5"
    assert ask(g, [digest_authorization(sha, "alice", "wonder", "DESCRIBE", URL)]) is None
    # bob has no SHA-256 hash: he must use MD5
    assert ask(g, [digest_authorization(sha, "bob", "builder", "DESCRIBE", URL,
                                        nc=2)]).status == 401
    assert ask(g, [digest_authorization(md5, "bob", "builder", "DESCRIBE", URL,
                                        nc=3)]) is None


def test_digest_uri_must_name_the_request():
    g = gate()
    (value,) = challenge(g)
    assert ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE", "/film")]) is None
    denial = ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE",
                                          "rtsp://127.0.0.1:8554/other", nc=2)])
    assert denial.status == 400 and denial.reason == "uri_mismatch"


@pytest.mark.parametrize("value, reason, status", [
    ('Digest username="alice"', "malformed", 400),
    ("Digest username=", "malformed", 400),
    ("Bearer abc", "unsupported", 401),
    ('Digest username="a", realm="kvod", nonce="n", uri="u", response="r", algorithm=SHA-1',
     "unsupported", 401),
    ('Digest username="a", realm="kvod", nonce="n", uri="/film", response="r", qop=auth',
     "malformed", 400),
    ('Digest username="a", realm="kvod", nonce="n", uri="/film", response="r", '
     'qop=auth-int, nc=00000001, cnonce="c"', "unsupported", 401),
])
def test_bad_authorizations(value, reason, status):
    g = gate()
    denial = ask(g, [value])
    assert (denial.status, denial.reason) == (status, reason)
    assert g.failures[reason] == 1


def test_two_authorization_headers_are_malformed():
    g = gate()
    (value,) = challenge(g)
    good = digest_authorization(value, "alice", "wonder", "DESCRIBE", URL)
    assert ask(g, [good, good]).status == 400


def test_basic_only_over_an_encrypted_connection():
    g = gate()
    basic = "Basic " + base64.b64encode(b"alice:wonder").decode()
    denial = ask(g, [basic])
    assert denial.status == 401 and denial.reason == "basic_insecure"
    assert all(v.startswith("Digest ") for _, v in denial.headers)
    assert ask(g, [basic], secure=True) is None
    assert ask(g, ["Basic " + base64.b64encode(b"alice:nope").decode()],
               secure=True).reason == "bad_credentials"
    assert any(v.startswith("Basic ") for _, v in ask(g, secure=True).headers)


def test_rules_open_prefix_and_named_users():
    g = gate(["/public/ open", "/staff/ bob"])
    assert ask(g, target="rtsp://h/public/film") is None
    (value,) = challenge(g, target="rtsp://h/staff/film")
    denial = ask(g, [digest_authorization(value, "alice", "wonder", "DESCRIBE",
                                          "rtsp://h/staff/film")], target="rtsp://h/staff/film")
    assert denial.status == 403 and denial.reason == "forbidden"
    assert ask(g, [digest_authorization(value, "bob", "builder", "DESCRIBE",
                                        "rtsp://h/staff/film", nc=2)],
               target="rtsp://h/staff/film") is None


def test_status_counts():
    g = gate()
    challenge(g)
    ask(g, ["Digest x"])
    status = g.status()
    assert status["users"] == 2 and status["challenges"] == 1
    assert status["failures"]["malformed"] == 1 and status["failures"]["replay"] == 0


# -------------------------------------------------------------- nonces ---

def test_nonce_store_memory_is_bounded_and_evicted_nonces_stay_dead():
    store = NonceStore(lifetime=1000, capacity=3, key=b"k" * 32)
    # a flood of challenges stores nothing
    flood = [store.issue("c", now=1.0 + i / 1000) for i in range(1000)]
    assert len(store) == 0
    for i, nonce in enumerate(flood[:5]):
        assert store.check(nonce, 1, "c", now=2.0) == FRESH
    assert len(store) == 3
    # the two evicted ones cannot come back with a replayed count ...
    assert store.check(flood[0], 1, "c", now=3.0) == STALE
    assert store.check(flood[1], 1, "c", now=3.0) == STALE
    # ... those still held count on
    assert store.check(flood[4], 1, "c", now=3.0) == REPLAY
    assert store.check(flood[4], 2, "c", now=3.0) == FRESH


def test_nonce_store_refuses_forgeries():
    store = NonceStore(lifetime=10, key=b"k" * 32)
    nonce = store.issue("c", now=5.0)
    issued, rand, mac = nonce.split("-")
    assert store.check(f"{issued}-{rand}-{'0' * 32}", None, "c", 5.0) == STALE
    assert store.check(f"0-{rand}-{mac}", None, "c", 5.0) == STALE  # an older time
    assert store.check("junk", None, "c", 5.0) == STALE
    assert NonceStore(lifetime=10).check(nonce, None, "c", 5.0) == STALE  # after a restart
    assert store.check(nonce, None, "c", 5.0) == FRESH
    assert store.check(nonce, None, "c", 6.0) == FRESH  # RFC 2069 form: no count


@pytest.mark.parametrize("value", ["Basic YWxpY2U6d29uZGVy,", "basicYWxpY2U6d29uZGVy",
                                   "Basic YWxpY2U6d29uZGVy x=1", 'Digest YWxpY2U6d29uZGVy="'])
def test_a_mangled_basic_header_never_reaches_the_log(value, caplog):
    # found by the fuzz campaign: parser messages quoted the header, and
    # "YWxpY2U6d29uZGVy" is alice:wonder in base64
    caplog.set_level(logging.DEBUG)
    assert ask(gate(), [value]).status in (400, 401)
    assert caplog.records and "YWxpY2U6d29uZGVy".lower() not in caplog.text.lower()
