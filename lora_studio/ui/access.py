"""Who may use the studio: failed logins slowed down per client, and jobs controlled by whoever started them.

Logins. The studio's login check (`LoginLimiter.checker`, Gradio's `auth` callable) counts each
client address's failed logins with the user names they tried; `LoginGuard`, an ASGI middleware in
front of Gradio's /login, tells the check which client is asking and turns away a client that must
still wait. After `free` failures a client waits before its next try, twice as long after each
further failure (up to `longest`), and gets 429 with the wait until then. A successful login clears
the failures for that user name only, so logging in to one account does not buy more guesses at
another. The limiter lives on the Studio object.

Jobs. With --auth, a job (training, a download) belongs to the user who started it: another user's
session cannot stop it, nor resume that user's run; the same user from another session or browser
can. Without --auth the studio has a single user, whoever can open its page (only this machine,
unless it was started with --insecure-no-auth), so every session may control every job.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import JobError
from ..i18n import language_from_header, msg, text

LOCAL_USER = ""  # the one user of a studio without a login
UNKNOWN_CLIENT = "unknown"


@dataclass
class LoginLimiter:
    free: int = 5            # failures before a client has to wait
    first_wait: float = 1.0  # seconds after the first failure past `free`; doubled after each further one
    longest: float = 300.0
    clock: Callable[[], float] = time.monotonic
    keep: int = 10_000       # clients remembered at most (the oldest are forgotten first)
    # client -> (user names of its failed logins, oldest first; time of the last failure)
    _failures: dict = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    # the address of the client whose login is being checked (set by LoginGuard for each request)
    client: ContextVar = field(default_factory=lambda: ContextVar("login_client", default=UNKNOWN_CLIENT),
                               init=False, repr=False)

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its next try (0: it may try now)."""
        with self._lock:
            users, last = self._failures.get(client, ((), 0.0))
        if len(users) < self.free:
            return 0.0
        delay = min(self.longest, self.first_wait * 2 ** (len(users) - self.free))
        return max(0.0, last + delay - self.clock())

    def record(self, client: str, user: str, succeeded: bool) -> None:
        with self._lock:
            users, last = self._failures.pop(client, ((), 0.0))
            if succeeded:
                users = tuple(name for name in users if name != user)
            else:
                # a long run of failures doubles the wait past `longest` anyway: keep what matters
                users, last = (*users, user)[-(self.free + 32):], self.clock()
            if users:
                self._failures[client] = (users, last)  # re-inserted: the dict stays oldest first
            while len(self._failures) > self.keep:
                self._failures.pop(next(iter(self._failures)))

    def checker(self, accounts) -> Callable[[str, str], bool]:
        """Gradio's `auth` callable for these (user, password) pairs, counting every outcome."""
        known = dict(accounts)

        def check(username: str, password: str) -> bool:
            expected = known.get(username)
            ok = expected is not None and hmac.compare_digest(password.encode(), expected.encode())
            self.record(self.client.get(), username, ok)
            return ok

        return check


class LoginGuard:
    """ASGI middleware: a client still waiting gets 429 at /login; any other login is checked knowing its client."""

    def __init__(self, app, limiter: LoginLimiter):
        self.app, self.limiter = app, limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or (UNKNOWN_CLIENT,))[0]
        wait = self.limiter.wait(client)
        if wait > 0:
            await self._too_many(scope, send, wait)
            return
        token = self.limiter.client.set(client)  # the login check runs in this request's context
        try:
            await self.app(scope, receive, send)
        finally:
            self.limiter.client.reset(token)

    @staticmethod
    async def _too_many(scope, send, wait: float):
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        lang = language_from_header(headers.get("accept-language", ""))
        seconds = max(1, round(wait))
        body = json.dumps({"detail": text("ui.login_wait", lang, seconds=seconds)}, ensure_ascii=False).encode()
        await send({"type": "http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"retry-after", str(seconds).encode())]})
        await send({"type": "http.response.body", "body": body})


def user_of(request) -> str:
    """The logged-in user of a request; without a login every session is the one local user."""
    return getattr(request, "username", None) or LOCAL_USER


def owner_key(job_or_run) -> str:
    """What a job is recorded under: a training job's run folder (so its run is too), else the job itself."""
    if isinstance(job_or_run, Path):
        return str(job_or_run)
    run_dir = getattr(job_or_run, "run_dir", None)
    return str(run_dir) if run_dir is not None else f"job-{id(job_or_run)}"


@dataclass
class Owners:
    """Who started each job and each run in this studio (kept while it runs)."""
    _by_key: dict = field(default_factory=dict, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def record(self, job_or_run, user: str) -> None:
        with self.lock:
            self._by_key[owner_key(job_or_run)] = user

    def owner(self, job_or_run) -> str | None:
        with self.lock:
            return self._by_key.get(owner_key(job_or_run))

    def require(self, job_or_run, user: str, name: str, action: str) -> None:
        """JobError unless `user` may control this job or run (its starter's, or started by no one recorded)."""
        owner = self.owner(job_or_run)
        if owner is not None and owner != user:
            raise JobError(msg(f"ui.not_yours_{action}", name=name, owner=owner or msg("ui.local_user")),
                           msg("ui.where_training"), msg("ui.not_yours_fix", owner=owner or msg("ui.local_user")))
