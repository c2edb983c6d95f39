"""Reviewers' accounts, sessions and login limits, kept in the console's Redis.

Passwords are stored only as argon2id hashes (argon2-cffi's defaults: RFC 9106's low-memory
profile, salted per hash). A session is a random token in an HttpOnly cookie; Redis keeps
only its SHA-256 (so a dump of Redis holds no usable session), with the user, the role and
the session's CSRF token, for `review.session_ttl_s`. Failed logins are counted per user
name and per client address over `review.login_window_s`; past either limit every
attempt is refused, right password or not, until the window ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from redis.exceptions import RedisError

from modpipe.core.errors import ConfigError, ReviewStoreUnavailable
from modpipe.core.settings import ReviewSettings
from modpipe.review.store import ReviewStore

Role = Literal["reviewer", "lead"]
ROLES: tuple[Role, ...] = ("reviewer", "lead")
_HASHER = PasswordHasher()
# Verified against when the user does not exist, so an unknown name costs the same time.
_DUMMY = _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Session:
    """A signed-in reviewer: who, with which role, and the token every POST must carry."""

    user: str
    role: Role
    csrf: str

    def csrf_ok(self, token: str | None) -> bool:
        """Whether `token` is this session's CSRF token (constant-time)."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def valid_name(name: str) -> bool:
    """User names: 1-64 letters, digits, `.`, `_` or `-`."""
    return 0 < len(name) <= 64 and all(c.isalnum() or c in "._-" for c in name)


_MAX_BACKOFF_S = 86400
# KEYS: the (user, address) and the address counters; ARGV: their limits, the window, the
# longest wait. Refused (0) if either is at its limit; the try is counted either way, and
# past the limit each one doubles the counter's remaining life.
_TRY = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local window, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local allowed = 1
for i = 1, 2 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= limits[i] then allowed = 0 end
end
for i = 1, 2 do
  local n = redis.call('INCR', KEYS[i])
  local life = window
  if n > limits[i] then life = math.min(window * 2 ^ (n - limits[i]), cap) end
  redis.call('EXPIRE', KEYS[i], math.floor(life))
end
return allowed
"""


class Accounts:
    """Users, sessions and failed-login counters on the review store's Redis."""

    def __init__(self, store: ReviewStore, settings: ReviewSettings) -> None:
        # decode_responses=True: replies are str, which redis-py's types cannot express.
        self._redis: Any = store.redis
        self._prefix = store.prefix
        self._settings = settings
        self._try = self._redis.register_script(_TRY)

    async def add_user(self, name: str, password: str, role: Role) -> None:
        """Create or replace a user; the password is kept only as an argon2id hash."""
        if not valid_name(name):
            raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
        if len(password) < 8:
            raise ConfigError("password: at least 8 characters")
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        try:
            await self._redis.hset(
                f"{self._prefix}:user:{name}", mapping={"hash": hashed, "role": role}
            )
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis add user failed: {exc}") from exc
        # A replaced password (or role) ends every session opened under the old one.
        await self.end_sessions(name)

    async def delete_user(self, name: str) -> bool:
        """Delete a user and end their sessions; False if there was no such user."""
        try:
            deleted = await self._redis.delete(f"{self._prefix}:user:{name}")
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis delete user failed: {exc}") from exc
        await self.end_sessions(name)
        return bool(deleted)

    async def end_sessions(self, name: str) -> int:
        """End every live session of user `name`; how many there were."""
        index = self._sessions_key(name)
        try:
            digests = await self._redis.smembers(index)
            keys = [f"{self._prefix}:session:{d}" for d in digests]
            ended = await self._redis.delete(*keys) if keys else 0
            await self._redis.delete(index)
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis end sessions failed: {exc}") from exc
        return int(ended)

    def _sessions_key(self, name: str) -> str:
        return f"{self._prefix}:sessions:{name}"

    async def try_login(self, name: str, address: str) -> bool:
        """Spend one login try for `name` from `address`; False if refused for now.

        One Redis script checks and counts in one step, so N parallel guesses cannot all
        pass a check made before any of them was counted. Tries are counted per (user,
        address) and per address, never per user alone: a stranger's failures elsewhere
        cannot lock a reviewer out. Past the limit every further try doubles the wait
        (up to a day). A try that signs in is given back (`refund_try`).
        """
        s = self._settings
        try:
            allowed = await self._try(
                keys=[
                    self._fail_key("pair", f"{name}\x00{address}"),
                    self._fail_key("addr", address),
                ],
                args=[
                    s.login_failures_per_user,
                    s.login_failures_per_address,
                    s.login_window_s,
                    _MAX_BACKOFF_S,
                ],
            )
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis rate limit failed: {exc}") from exc
        return bool(allowed)

    async def refund_try(self, name: str, address: str) -> None:
        """Give back the try of a login that succeeded."""
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.decr(self._fail_key("pair", f"{name}\x00{address}"))
                pipe.decr(self._fail_key("addr", address))
                await pipe.execute()
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis rate limit failed: {exc}") from exc

    async def authenticate(self, name: str, password: str) -> Role | None:
        """The user's role if the password is right (the try was counted before)."""
        try:
            user: dict[str, str] = (
                await self._redis.hgetall(f"{self._prefix}:user:{name}") if valid_name(name) else {}
            )
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis user failed: {exc}") from exc
        ok = await asyncio.to_thread(_verify, user.get("hash", _DUMMY), password)
        if ok and user:
            return "lead" if user.get("role") == "lead" else "reviewer"
        return None

    def _fail_key(self, kind: str, value: str) -> str:
        return f"{self._prefix}:loginfail:{kind}:{_digest(value)}"

    async def open_session(self, user: str, role: Role) -> tuple[str, Session]:
        """A new session: its cookie token and the session (with a fresh CSRF token)."""
        token = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32))
        key = f"{self._prefix}:session:{_digest(token)}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"user": user, "role": role, "csrf": session.csrf})
                pipe.expire(key, self._settings.session_ttl_s)
                # The user's sessions, so a password change or a deletion can end them all.
                pipe.sadd(self._sessions_key(user), _digest(token))
                pipe.expire(self._sessions_key(user), self._settings.session_ttl_s)
                await pipe.execute()
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis session failed: {exc}") from exc
        return token, session

    async def session(self, token: str | None) -> Session | None:
        """The live session for a cookie token, or None."""
        if not token or len(token) > 128:
            return None
        try:
            h: dict[str, str] = await self._redis.hgetall(
                f"{self._prefix}:session:{_digest(token)}"
            )
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis session failed: {exc}") from exc
        if not h:
            return None
        return Session(h["user"], "lead" if h["role"] == "lead" else "reviewer", h["csrf"])

    async def close_session(self, token: str) -> None:
        """Sign out: the token stops working at once."""
        try:
            await self._redis.delete(f"{self._prefix}:session:{_digest(token)}")
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis session failed: {exc}") from exc


def _verify(hashed: str, password: str) -> bool:
    try:
        return _HASHER.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
