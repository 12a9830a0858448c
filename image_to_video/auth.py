"""Who may use the server: a login whenever it listens beyond this machine.

With ``server.login: auto`` (the default) a server on 127.0.0.1 needs no login,
and one on a network address needs a user name and password: the configured
ones, else a strong password generated on first start and kept in
``<state_dir>/credentials.txt``, readable by its owner only. The same password is
the HTTP API's bearer token.

``LoginThrottle`` slows down password guessing: after a few wrong passwords from
one client address (the page's login form or the API's bearer token alike), that
address is refused for a while, longer each time; a right password forgets it.
A client that a proxy nobody declared says it forwards (``"<claimed> via <proxy>"``,
``http_guard.client_address``) is throttled on its own and, with every other client
of that proxy, against the proxy's address.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import AppConfig

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.txt"
#: Between a client a proxy says it forwards and the proxy's own address: ``"203.0.113.5 via 127.0.0.1"``.
VIA = " via "


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def check(self, username: str, password: str) -> bool:
        return (secrets.compare_digest(username.encode(), self.username.encode())
                and secrets.compare_digest(password.encode(), self.password.encode()))

    def check_token(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self.password.encode())


@dataclass
class _Record:
    """One client address's recent wrong passwords and lockouts."""

    failures: list[float] = field(default_factory=list)
    lockouts: int = 0
    locked_until: float = 0.0


class LoginThrottle:
    """Wrong passwords per client address: ``allowed`` of them within ``window_s`` lock the address
    out for ``first_lock_s``, doubling with each further lockout up to ``max_lock_s``.

    One address's failures never lock out another. A right password clears the address.
    An address ``"<claimed> via <proxy>"`` also counts against ``proxy`` as a whole, which
    allows ``shared_factor`` times as many: one client behind an undeclared proxy who mistypes
    locks out only itself, while made-up claims from one connection still reach a lockout (of
    that proxy's every client: declare the proxy in ``server.trusted_proxies`` to avoid it).
    Thread-safe: the API checks tokens in worker threads. ``clock`` is injectable for tests.
    """

    #: Addresses remembered at most; the quietest are forgotten first (a flood of addresses
    #: cannot grow memory without bound).
    max_addresses = 10_000
    #: How many more wrong passwords all the clients of one undeclared proxy get together than one client.
    shared_factor = 4

    def __init__(self, *, allowed: int = 5, window_s: float = 60.0, first_lock_s: float = 30.0,
                 max_lock_s: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.allowed, self.window_s = allowed, window_s
        self.first_lock_s, self.max_lock_s = first_lock_s, max_lock_s
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        """Seconds until ``address`` may try a password again; 0: now."""
        now = self._clock()
        with self._lock:
            records = [self._records.get(key) for key, _allowed in self._keys(address)]
            return max([0.0, *(record.locked_until - now for record in records if record)])

    def failed(self, address: str) -> None:
        """Count a wrong password from ``address``; lock it out when there were too many."""
        now = self._clock()
        with self._lock:
            for key, allowed in self._keys(address):
                self._count(key, allowed, now)
            while len(self._records) > self.max_addresses:
                del self._records[next(iter(self._records))]

    def _keys(self, address: str) -> list[tuple[str, int]]:
        """(key, wrong passwords allowed) that ``address`` counts against: itself, and its proxy's share."""
        if VIA not in address:
            return [(address, self.allowed)]
        return [(address, self.allowed), ("all" + VIA + address.split(VIA, 1)[1], self.allowed * self.shared_factor)]

    def _count(self, key: str, allowed: int, now: float) -> None:
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record  # newest last: the oldest are forgotten first
        record.failures = [t for t in record.failures if now - t < self.window_s] + [now]
        if len(record.failures) >= allowed:
            record.lockouts += 1
            record.failures = []
            record.locked_until = now + min(self.max_lock_s, self.first_lock_s * 2 ** (record.lockouts - 1))
            log.warning("Too many wrong passwords from %s: refused for %.0f s", key, record.locked_until - now)

    def succeeded(self, address: str) -> None:
        """A right password: forget ``address``'s failures and lockouts (not its proxy's share: one
        client's right password does not buy others behind the proxy more guesses)."""
        with self._lock:
            self._records.pop(address, None)


def credentials_path(config: AppConfig) -> Path:
    return config.paths.state_dir / CREDENTIALS_FILE


def resolve_credentials(config: AppConfig) -> Credentials | None:
    """The login the server requires, or None when it needs none."""
    server = config.server
    if not server.login_required:
        if server.login == "off" and not server.loopback_only:
            log.warning("Login is OFF on %s: anyone who can reach this port can use the GPU and see "
                        "every video. Use --host 127.0.0.1, or drop --no-login.", server.host)
        return None
    if server.password:
        return Credentials(server.username, server.password)
    return Credentials(server.username, _stored_password(credentials_path(config), server.username))


def stored_password(path: Path) -> str:
    """The password in a ``user:password`` credentials file; empty when there is none."""
    try:
        return path.read_text(encoding="utf-8").strip().split(":", 1)[1]
    except (OSError, IndexError):
        return ""


def _stored_password(path: Path, username: str) -> str:
    """The stored password, or a strong new one, written readable by the owner only."""
    password = stored_password(path)
    if password:
        return password
    password = secrets.token_urlsafe(18)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created readable by the owner only, before anything is written into it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"{username}:{password}\n")
    os.chmod(path, 0o600)
    log.info("Generated a login password in %s", path)
    return password
