"""Issue 10 item 5: who can reach the studio, and who can control its jobs.

A page others can reach (--share, a --host other than loopback) needs a login unless
--insecure-no-auth says it is meant; wrong passwords in a loop are slowed down per client, with the
count cleared per user name on success; with logins, a user's training job is theirs to stop and
resume; without them every session is the one local user.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from .studio_fixture import close_studio, launch_studio  # noqa: E402
from .test_ui_api import wait_for  # noqa: E402
from .test_ui_security import refused  # noqa: E402


@pytest.mark.parametrize("argv,refused_for", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0"),
    (["--host", "192.168.1.20"], "--host 192.168.1.20"),
    (["--host", "::"], "--host ::"),
    (["--host", "example.com"], "--host example.com"),
    (["--host", "10.0.0.1", "--port", "9000"], "--host 10.0.0.1"),
    (["--share"], "--share publishes"),
    (["--share", "--host", "127.0.0.1"], "--share publishes"),
])
def test_a_page_others_can_reach_needs_a_login(capsys, argv, refused_for):
    from lora_studio.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert refused_for in err and "--auth USER:PASS" in err and "--insecure-no-auth" in err, err


@pytest.mark.parametrize("host,share,auth,insecure,ok", [
    ("127.0.0.1", False, None, False, True), ("127.0.0.2", False, None, False, True),
    ("::1", False, None, False, True), ("[::1]", False, None, False, True), ("localhost", False, None, False, True),
    ("LOCALHOST", False, None, False, True), ("0.0.0.0", False, None, False, False),
    ("0.0.0.0", False, [("a", "b")], False, True), ("0.0.0.0", False, None, True, True),
    ("192.168.0.2", True, None, False, False), ("127.0.0.1", True, None, True, True),
    ("127.0.0.1", True, [("a", "b")], False, True), ("", False, None, False, False),
])
def test_the_exposure_rule(host, share, auth, insecure, ok):
    from lora_studio.errors import ConfigError
    from lora_studio.ui.cli import check_exposure

    if ok:
        check_exposure(host, share, auth, insecure)
    else:
        with pytest.raises(ConfigError):
            check_exposure(host, share, auth, insecure)


def test_the_old_flag_and_several_logins_parse():
    from lora_studio.cli import build_parser
    from lora_studio.errors import ConfigError
    from lora_studio.ui.cli import parse_auth

    args = build_parser("en").parse_args(["studio", "--share-without-auth", "--auth", "a:1", "--auth", "b:2:3",
                                           "--allow-path", "/srv/x", "--allow-path", "/srv/y", "--max-upload-mb", "5"])
    assert args.insecure_no_auth and parse_auth(args.auth) == [("a", "1"), ("b", "2:3")]
    assert args.allow_path == ["/srv/x", "/srv/y"] and args.max_upload_mb == 5
    assert parse_auth("solo:pw") == [("solo", "pw")] and parse_auth(None) is None
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(ConfigError):
            parse_auth([bad])


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_failed_logins_wait_longer_each_time():
    from lora_studio.ui.access import LoginLimiter

    clock = Clock()
    limiter = LoginLimiter(free=3, first_wait=2.0, longest=16.0, clock=clock)
    waits = []
    for _ in range(8):
        waits.append(limiter.wait("10.0.0.9"))
        limiter.record("10.0.0.9", "alice", succeeded=False)
    assert waits == [0, 0, 0, 2.0, 4.0, 8.0, 16.0, 16.0]  # doubled each time, up to the longest
    assert limiter.wait("10.0.0.9") == 16.0
    assert limiter.wait("10.0.0.10") == 0  # another client is not slowed down
    clock.now += 16.0
    assert limiter.wait("10.0.0.9") == 0
    limiter.record("10.0.0.9", "alice", succeeded=True)
    limiter.record("10.0.0.9", "alice", succeeded=False)
    assert limiter.wait("10.0.0.9") == 0  # a success starts the count again
    for _ in range(3):
        limiter.record("10.0.0.9", "bob", succeeded=False)
    limiter.record("10.0.0.9", "mallory", succeeded=True)  # logging in to one's own account...
    assert limiter.wait("10.0.0.9") == 4.0  # ...does not buy more guesses at bob's (nor clear alice's)
    small = LoginLimiter(keep=3, clock=clock)
    for n in range(10):
        small.record(f"c{n}", "x", succeeded=False)
    assert len(small._failures) == 3  # bounded memory: the oldest clients are forgotten
    check = LoginLimiter(clock=clock).checker([("alice", "pw"), ("bob", "other")])
    assert check("alice", "pw") and not check("alice", "other") and not check("nobody", "pw") and not check("bob", "")


@pytest.fixture
def logins(ws, demo_model_dir):
    from lora_studio.ui.access import LoginLimiter

    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    clock = Clock()
    url, state, demo = launch_studio(ws, "en", auth=[("alice", "pw-alice"), ("bob", "pw-bob")],
                                     logins=LoginLimiter(free=3, first_wait=30.0, clock=clock))
    yield url, state, clock
    close_studio(state, demo)


def login(url: str, user: str, password: str, source: str = "127.0.0.1", lang: str = "en") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport) as http:
        return http.post(url.rstrip("/") + "/login", data={"username": user, "password": password},
                         headers={"Accept-Language": lang})


def test_wrong_passwords_in_a_loop_are_rate_limited(logins):
    url, state, clock = logins
    codes = [login(url, "alice", f"guess-{n}").status_code for n in range(10)]
    assert codes == [400] * 3 + [429] * 7, codes
    blocked = login(url, "alice", "pw-alice")  # even the right password waits its turn
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) == 30
    assert "too many failed logins: try again in 30 s" in blocked.json()["detail"]
    assert "登录失败次数过多" in login(url, "bob", "x", lang="zh-CN").json()["detail"]
    assert login(url, "bob", "pw-bob", source="127.0.0.2").status_code == 200  # another address is not held
    with pytest.raises(Exception):
        Client(url, auth=("alice", "pw-alice"), verbose=False)
    clock.now += 31
    assert login(url, "alice", "nope").status_code == 400  # one more try after the wait, then a longer one
    assert login(url, "alice", "pw-alice").status_code == 429
    clock.now += 61
    Client(url, auth=("alice", "pw-alice"), verbose=False)  # logged in: the count starts again
    assert [login(url, "bob", "bad").status_code for _ in range(3)] == [400] * 3
    assert login(url, "alice", "pw-alice", source="127.0.0.1").status_code == 429  # bob's guesses hold


def test_a_job_is_stopped_or_resumed_only_by_its_user(logins):
    url, state, _ = logins
    alice, bob = (Client(url, auth=(user, f"pw-{user}"), verbose=False) for user in ("alice", "bob"))
    alice_again = Client(url, auth=("alice", "pw-alice"), verbose=False)  # another session, same user
    started = alice.predict(max_steps=400, save_steps=4, logging_steps=2, api_name="/start_training")
    run = started.split("`")[1]
    wait_for(alice, lambda p: p["step"] >= 4)
    text = refused(bob, "was started by alice; only alice can stop it", api_name="/stop_training")
    assert "【Job problem】" in text
    assert wait_for(bob, lambda p: p["state"] == "running")["state"] == "running"  # bob sees it, still running
    assert "Stopping" in alice_again.predict(api_name="/stop_training")
    wait_for(alice, lambda p: p["state"] == "stopped")
    refused(bob, "run " + run + " was started by alice; only alice can resume it", run=run,
            api_name="/resume_training")
    assert "Resumed" in alice_again.predict(run=run, api_name="/resume_training")
    refused(bob, "only alice can stop it", api_name="/stop_training")
    alice.predict(api_name="/stop_training")
    wait_for(alice, lambda p: p["state"] not in ("running", "stopping"))


def test_without_a_login_every_session_is_the_one_local_user(ws, demo_model_dir):
    shutil.copytree(demo_model_dir, ws.models / "demo-tiny")
    url, state, demo = launch_studio(ws, "en")
    try:
        first, second = Client(url, verbose=False), Client(url, verbose=False)
        first.predict(max_steps=400, save_steps=50, logging_steps=2, api_name="/start_training")
        wait_for(first, lambda p: p["step"] >= 2)
        assert "Stopping" in second.predict(api_name="/stop_training")  # the same person, another tab
        wait_for(first, lambda p: p["state"] == "stopped")
    finally:
        close_studio(state, demo)
