"""The doctor's checks beyond Kafka: Redis roles and eviction policies, the classifier
service, the frontier provider, the console's users, the budget."""

from __future__ import annotations

from typing import Any

import httpx
from redis.exceptions import RedisError, ResponseError

from classifiers.guard_prompt import load_tokenizer
from classifiers.http import VllmHttp, server_root
from classifiers.vllm_server import check_server
from modpipe.core.errors import AccessError, ModpipeError
from modpipe.core.redis_client import check_redis_access, connect_redis
from modpipe.core.settings import Settings
from modpipe.doctor import Finding, fail, ok, warn

_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


async def check_redis(settings: Settings) -> list[Finding]:
    """Each Redis role: it answers, and its eviction policy suits what it holds."""
    r = settings.redis
    roles: dict[str, tuple[str, str]] = {
        "redis state": (r.url, "budget and single-flight locks (escalator)"),
    }
    if r.cache_url:
        roles["redis cache"] = (r.cache_url, "the verdict cache")
    review_url = settings.review.redis_url or r.url
    roles["redis review"] = (review_url, "the console's queues and decisions")
    return [await _redis_role(settings, item, url, use) for item, (url, use) in roles.items()]


async def _redis_role(settings: Settings, item: str, url: str, use: str) -> Finding:
    client = connect_redis(settings.redis, url, timeout_s=max(settings.redis.timeout_s, 2.0))
    try:
        await check_redis_access(client, settings.redis, url)
        await client.ping()
        try:
            config = await client.config_get("maxmemory*")
            persistence = await client.config_get("appendonly")
        except ResponseError as exc:  # CONFIG refused to this user (a managed Redis)
            return warn(item, f"{url} answers; policy unreadable ({exc}): {use} needs noeviction")
    except AccessError as exc:
        return fail(item, str(exc))
    except RedisError as exc:
        return fail(item, f"{url} does not answer ({exc}); it holds {use}")
    finally:
        await client.aclose()
    policy = _setting(config, "maxmemory-policy")
    aof = _setting(persistence, "appendonly")
    if item == "redis cache":
        if policy not in _EVICTING:
            return warn(
                item,
                f"{url} maxmemory-policy {policy}: the cache should evict "
                "(CONFIG SET maxmemory-policy allkeys-lru, with a maxmemory)",
            )
        return ok(item, f"{url} maxmemory-policy {policy}")
    if policy != "noeviction":
        return fail(
            item,
            f"{url} maxmemory-policy {policy} may evict {use}: CONFIG SET maxmemory-policy "
            "noeviction (and point redis.cache_url at an evicting Redis for the cache)",
        )
    if item == "redis review" and aof != "yes":
        return warn(
            item,
            f"{url} noeviction, but appendonly {aof}: a restart loses waiting review items "
            "(CONFIG SET appendonly yes)",
        )
    return ok(item, f"{url} maxmemory-policy noeviction, appendonly {aof}")


def _setting(config: Any, name: str) -> str:
    value = config.get(name) or config.get(name.encode())  # bytes unless decode_responses
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_classifier(settings: Settings) -> list[Finding]:
    """The tier-1 backend: its model, and for vLLM the server, model, tokenizer, labels."""
    c = settings.classifier
    item = f"classifier {c.backend}"
    if c.backend == "cpu":
        if c.model_path is None:
            return [ok(item, "the packaged model (alt-profanity-check)")]
        if not c.model_path.is_dir():
            return [fail(item, f"classifier.model_path {c.model_path} is not a directory")]
        return [ok(item, f"model at {c.model_path}")]
    http = VllmHttp(server_root(c.base_url), min(c.timeout_s, 5.0), 1, 1)
    try:
        served = await check_server(http, c.model)
        findings = [ok(item, f"vLLM {served.version} at {c.base_url} serves {c.model}")]
        if c.backend == "vllm-guard":
            findings.append(_tokenizer(settings))
        else:
            findings.append(await _labels(settings, http))
        return findings
    except ModpipeError as exc:
        return [fail(item, f"{c.base_url}: {exc}")]
    finally:
        await http.aclose()


def _tokenizer(settings: Settings) -> Finding:
    path = settings.classifier.tokenizer_path
    try:
        load_tokenizer(path)
    except (ModpipeError, ImportError, OSError) as exc:
        return fail("classifier tokenizer", f"{exc} (classifier.tokenizer_path, or the gpu extra)")
    return ok("classifier tokenizer", f"Llama 3 tokenizer from {path or 'llama-models'}")


async def _labels(settings: Settings, http: VllmHttp) -> Finding:
    c = settings.classifier
    item = "classifier labels"
    unknown = [label for label in c.labels if label and label not in settings.policy.categories]
    if not c.labels or unknown:
        why = f"unknown categories {unknown}" if unknown else "none set"
        return fail(item, f"classifier.labels: {why} (one policy category or null per class)")
    reply = await http.post(
        "/classify", {"model": c.model, "input": ["modpipe doctor"], "use_activation": False}
    )
    data = reply.get("data") or [{}]
    classes = len(data[0].get("probs") or [])
    if classes != len(c.labels):
        return fail(
            item,
            f"{c.model} has {classes} classes, classifier.labels names {len(c.labels)}: "
            "one label per class, in class-index order",
        )
    return ok(item, f"{classes} classes: {c.labels}")


async def check_provider(settings: Settings) -> list[Finding]:
    """The frontier provider: its key and model, asked of the provider itself."""
    provider, e = settings.provider, settings.escalation
    item = f"provider {provider}"
    if provider == "none":
        return [
            warn(
                item,
                "no frontier (no OPENAI_API_KEY or escalation.base_url): "
                "every escalation goes to human review",
            )
        ]
    model = e.model if provider == "chat" else e.moderation_model
    base = (e.base_url or "https://api.openai.com/v1").rstrip("/")
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            reply = await client.get(f"{base}/models", headers=headers)
    except httpx.HTTPError as exc:
        return [fail(item, f"{base} does not answer: {type(exc).__name__}: {exc}")]
    if reply.status_code in (401, 403):
        return [
            fail(item, f"{base} refused the key (HTTP {reply.status_code}): set OPENAI_API_KEY")
        ]
    if reply.status_code != 200:
        return [warn(item, f"{base}/models answered HTTP {reply.status_code}; model not checked")]
    served = [m.get("id") for m in reply.json().get("data", []) if isinstance(m, dict)]
    if model not in served:
        field = "escalation.model" if provider == "chat" else "escalation.moderation_model"
        return [fail(item, f"{base} does not offer {field} {model!r}")]
    return [ok(item, f"{base} accepts the key and offers {model}")]


async def check_console_users(settings: Settings) -> list[Finding]:
    """The console needs one account at least, and a lead to see leases."""
    from modpipe.review.store import ReviewStore, connect

    item = "console users"
    store = ReviewStore(
        connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
    )
    try:
        roles: dict[str, int] = {}
        async for key in store.redis.scan_iter(match=f"{store.prefix}:user:*", count=500):
            role = str(await store.redis.hget(key, "role"))
            roles[role] = roles.get(role, 0) + 1
    except RedisError as exc:
        return [fail(item, f"cannot read them ({exc})")]
    finally:
        await store.aclose()
    if not roles:
        return [fail(item, "none: `modpipe review add-user NAME --role lead` (password on stdin)")]
    counts = ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
    if "lead" not in roles:
        return [warn(item, f"{counts}, no lead: add one with --role lead")]
    return [ok(item, counts)]


async def check_budget(settings: Settings) -> list[Finding]:
    """Today's frontier budget: set, and not spent."""
    from escalation.budget import Budget

    item = "budget"
    daily = settings.escalation.daily_budget_usd
    if settings.provider == "none":
        return [ok(item, f"${daily:,.2f} a day (unused: no frontier provider)")]
    if daily <= 0:
        return [warn(item, "escalation.daily_budget_usd is 0: every escalation goes to review")]
    client = connect_redis(settings.redis, timeout_s=max(settings.redis.timeout_s, 2.0))
    try:
        spent = await Budget(daily, client, settings.redis.key_prefix).spent()
    finally:
        await client.aclose()
    if spent >= daily:
        return [
            warn(
                item,
                f"${spent:,.2f} of ${daily:,.2f} spent today: escalations go to review "
                "(reason budget) until midnight UTC; raise escalation.daily_budget_usd",
            )
        ]
    return [ok(item, f"${spent:,.2f} of ${daily:,.2f} spent today")]
