"""Who may use the server: a login whenever it listens beyond this machine.

With ``server.login: auto`` (the default) a server on 127.0.0.1 needs no login,
and one on a network address needs a user name and password: the configured
ones, else a strong password generated on first start and kept in
``<state_dir>/credentials.txt``, readable by its owner only. The same password is
the HTTP API's bearer token.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .config import AppConfig

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "credentials.txt"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def check(self, username: str, password: str) -> bool:
        return (secrets.compare_digest(username.encode(), self.username.encode())
                and secrets.compare_digest(password.encode(), self.password.encode()))

    def check_token(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self.password.encode())


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
