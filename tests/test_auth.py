import stat

from image_to_video.auth import LoginThrottle, credentials_path, resolve_credentials
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


class Clock:
    """A clock the test moves: no test waits out a lockout."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_locks_an_address_for_a_growing_time_and_a_success_resets_it():
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(throttle.allowed):
        assert throttle.wait_s("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    first = throttle.wait_s("10.0.0.1")
    assert first > 0 and throttle.wait_s("10.0.0.2") == 0
    clock.now += first
    assert throttle.wait_s("10.0.0.1") == 0
    for _ in range(throttle.allowed):
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") > first  # locked out again: for longer
    clock.now += throttle.wait_s("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 0  # a success forgot the earlier failures


def test_behind_an_undeclared_proxy_each_client_is_throttled_alone_and_all_of_them_together():
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    for _ in range(throttle.allowed):
        throttle.failed("203.0.113.5 via 127.0.0.1")
    assert throttle.wait_s("203.0.113.5 via 127.0.0.1") > 0
    assert throttle.wait_s("203.0.113.6 via 127.0.0.1") == 0  # one who mistyped locks out only itself
    assert throttle.wait_s("127.0.0.1") == 0
    claims = [f"10.0.0.{n} via 127.0.0.1" for n in range(throttle.allowed * throttle.shared_factor)]
    for claim in claims:  # a new made-up address each time
        throttle.failed(claim)
    assert throttle.wait_s("10.0.0.250 via 127.0.0.1") > 0, "made-up addresses got round the throttle"
