import stat

from image_to_video.auth import credentials_path, resolve_credentials
from image_to_video.config import load_config


def config_for(tmp_path, **overrides):
    return load_config(overrides={"paths.state_dir": str(tmp_path), **overrides})


def test_a_strong_password_is_generated_once_and_kept_private(tmp_path):
    config = config_for(tmp_path, **{"server.host": "0.0.0.0"})
    first = resolve_credentials(config)
    assert first.username == "admin" and len(first.password) >= 20
    path = credentials_path(config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_credentials(config) == first  # the same password on the next start
    assert first.check("admin", first.password) and not first.check("admin", "guess")
    assert first.check_token(first.password) and not first.check_token("")


def test_configured_credentials_are_used_and_nothing_is_written(tmp_path):
    config = config_for(tmp_path, **{"server.host": "0.0.0.0", "server.username": "me", "server.password": "s3cret"})
    credentials = resolve_credentials(config)
    assert (credentials.username, credentials.password) == ("me", "s3cret")
    assert not credentials_path(config).exists()


def test_loopback_needs_no_login(tmp_path):
    assert resolve_credentials(config_for(tmp_path, **{"server.host": "127.0.0.1"})) is None


def test_login_off_on_the_network_warns(tmp_path, caplog):
    config = config_for(tmp_path, **{"server.host": "0.0.0.0", "server.login": "off"})
    assert resolve_credentials(config) is None
    assert "Login is OFF" in caplog.text
