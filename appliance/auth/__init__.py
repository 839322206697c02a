"""RTSP authentication, sans-IO: users from an htdigest file, Digest
(RFC 2617 MD5, RFC 7616 SHA-256) and Basic over RTSPS, expiring nonces
with replay protection, and access rules by path prefix.

The RTSP server hands each request to :class:`RtspGate` before the session
layer; nothing here touches a socket, a reactor or a clock.
"""

from appliance.auth.errors import AuthError, AuthHeaderError, HtdigestError
from appliance.auth.gate import Denial, RtspGate
from appliance.auth.htdigest import Users, load_htdigest, parse_htdigest
from appliance.auth.nonces import NonceStore
from appliance.auth.rules import AccessRules, parse_rule

__all__ = ["AccessRules", "AuthError", "AuthHeaderError", "Denial", "HtdigestError",
           "NonceStore", "RtspGate", "Users", "load_htdigest", "parse_htdigest", "parse_rule"]
