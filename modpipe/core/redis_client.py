"""Opening Redis: one function for every client modpipe makes (cache, state, console),
and the start-time check that tells a refusal (password, ACL user, TLS) from an outage."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from modpipe.core.errors import AccessError
from modpipe.core.settings import RedisSettings


def connect_redis(
    settings: RedisSettings,
    url: str | None = None,
    *,
    timeout_s: float | None = None,
    decode_responses: bool = False,
) -> aioredis.Redis:
    """The one way modpipe opens Redis: `url` (default `settings.url`) with the ACL user,
    the password and, for rediss://, the CA file; short timeouts (`redis.timeout_s` unless
    `timeout_s` says otherwise) so an outage degrades fast.
    """
    url = url or settings.url
    timeout = settings.timeout_s if timeout_s is None else timeout_s
    options: dict[str, Any] = {
        "decode_responses": decode_responses,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "username": settings.username,
        "password": settings.password.get_secret_value() if settings.password else None,
    }
    if url.startswith("rediss://") and settings.ssl_cafile is not None:
        options["ssl_ca_certs"] = str(settings.ssl_cafile)
    return aioredis.Redis.from_url(url, **options)


async def check_redis_access(client: aioredis.Redis, settings: RedisSettings, url: str) -> None:
    """Raise AccessError when Redis refuses us (password, ACL user, TLS): a mistake that
    waiting cannot cure must stop the start, while Redis merely down is degraded around."""
    where = f"Redis at {url}"  # never holds a password (RedisSettings refuses one)
    try:
        await client.ping()
    except (AuthenticationError, NoPermissionError) as exc:
        user = settings.username or "default"
        raise AccessError(f"{where} refused user {user!r}: {exc}") from None
    except RedisConnectionError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            raise AccessError(
                f"{where}: TLS certificate not trusted; is redis.ssl_cafile the CA that signed it?"
            ) from None
        if "SSL" in text or "WRONG_VERSION_NUMBER" in text:
            raise AccessError(
                f"{where}: TLS handshake failed (rediss:// on a plain port?)"
            ) from None
    except RedisError:
        pass  # down or slow: the cache is skipped and retried (see FrontierTier)
