"""TLS in the engine (rustls): what an ``ssl.SSLContext`` maps to, and when it cannot.

A ``wss://`` connection takes the direct socket path (``_direct``) with rustls doing the
encryption inside the compiled ``SocketIO``, so that a read is one call (recv, decrypt,
parse) and so is a send (encode, encrypt, sendmsg). Users keep configuring TLS the Python
way; :func:`client_config` maps a client's context to a ``TlsClientConfig`` when that can be
done faithfully, and returns ``None`` otherwise, which keeps the connection on asyncio's
``ssl`` transport:

- the server's certificate is verified and its name checked (``verify_mode`` is
  ``CERT_REQUIRED`` and ``check_hostname`` on), against the context's CA certificates
  (``get_ca_certs``); a context that trusts a certificate that is not a CA's, none, or that
  checks revocation lists (``VERIFY_CRL_CHECK_*``) or logs keys (``keylog_filename``) keeps
  Python's ``ssl``;
- the TLS versions (1.2 and 1.3 within ``minimum_version``..``maximum_version``, less those
  the ``OP_NO_*`` options turn off) and the cipher suites ``get_ciphers()`` allows.

What cannot be read back from a context is handled where it shows: a server that asks for a
client certificate (one may have been loaded with ``load_cert_chain``) gets the connection
made again with Python's ``ssl``. Verification is never weaker than Python's: what differs
is stricter (a certificate whose name is only in its subject's common name, without a
subject alternative name, fails; CA certificates reachable only through a ``capath``
directory are not seen).

A server's certificate and key come from files (``serve(certfile=..., keyfile=...)``):
:func:`server_config`.
"""

from __future__ import annotations

import os
import ssl
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._wschannel import TlsClientConfig, TlsServerConfig
else:
    try:
        from ._wschannel import TlsClientConfig, TlsServerConfig
    except ImportError:  # not on this platform (Windows, the browser)
        TlsClientConfig = TlsServerConfig = None

__all__ = ["client_config", "default_context", "server_config", "server_context"]

AVAILABLE = TlsClientConfig is not None

_NOT_MAPPED_FLAGS = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN

# Per context: the state it was mapped in, and what it mapped to (None: it cannot be).
_configs: weakref.WeakKeyDictionary[ssl.SSLContext, tuple[object, TlsClientConfig | None]] = (
    weakref.WeakKeyDictionary()
)

_default: ssl.SSLContext | None = None


def default_context() -> ssl.SSLContext:
    """The context of ``wss://`` without ``ssl=``: ``ssl.create_default_context()``, made
    once (loading the system's CA certificates takes milliseconds)."""
    global _default
    if _default is None:
        _default = ssl.create_default_context()
    return _default


def _allows(context: ssl.SSLContext, version: ssl.TLSVersion, off: int) -> bool:
    low = context.minimum_version
    high = context.maximum_version
    above_low = low == ssl.TLSVersion.MINIMUM_SUPPORTED or low <= version
    below_high = high == ssl.TLSVersion.MAXIMUM_SUPPORTED or high >= version
    return above_low and below_high and not context.options & off


def _state(context: ssl.SSLContext) -> object:
    """What the mapping depends on that can change after the context is made."""
    stats = context.cert_store_stats()
    return (
        context.verify_mode,
        context.check_hostname,
        int(context.verify_flags),
        int(context.options),
        context.minimum_version,
        context.maximum_version,
        stats["x509"],
        stats["x509_ca"],
        getattr(context, "keylog_filename", None),
    )


def client_config(context: ssl.SSLContext) -> TlsClientConfig | None:
    """The rustls configuration that verifies servers as ``context`` does, or ``None`` when
    it cannot be mapped faithfully (the connection then keeps Python's ``ssl``)."""
    if not AVAILABLE:
        return None
    state = _state(context)
    cached = _configs.get(context)
    if cached is not None and cached[0] == state:
        return cached[1]
    config = _map(context)
    _configs[context] = (state, config)
    return config


def _map(context: ssl.SSLContext) -> TlsClientConfig | None:
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        return None
    if context.verify_flags & _NOT_MAPPED_FLAGS or getattr(context, "keylog_filename", None):
        return None
    stats = context.cert_store_stats()
    if stats["x509"] != stats["x509_ca"]:
        return None  # a trusted certificate that is not a CA's: get_ca_certs leaves it out
    roots = context.get_ca_certs(binary_form=True)
    if not roots:
        return None
    tls12 = _allows(context, ssl.TLSVersion.TLSv1_2, ssl.OP_NO_TLSv1_2)
    tls13 = _allows(context, ssl.TLSVersion.TLSv1_3, ssl.OP_NO_TLSv1_3)
    ciphers = [cipher["name"] for cipher in context.get_ciphers()]
    try:
        return TlsClientConfig(roots, ciphers=ciphers, tls12=tls12, tls13=tls13)
    except ValueError:  # no version or cipher suite in common with rustls, or no usable CA
        return None


def server_config(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None
) -> TlsServerConfig:
    """A server's rustls configuration from its certificate chain and key (PEM files)."""
    if TlsServerConfig is None:
        raise RuntimeError("TLS in the engine is not available on this platform")
    return TlsServerConfig(os.fspath(certfile), None if keyfile is None else os.fspath(keyfile))


def server_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None
) -> ssl.SSLContext:
    """The same files as an ``ssl.SSLContext``, for a server that cannot take the direct
    path (an event loop without ``add_reader``, ``WSCHANNEL_DIRECT_IO=0``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
