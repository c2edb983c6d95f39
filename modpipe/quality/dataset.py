"""`modpipe dataset build`: the pipeline's own decisions, read back from Kafka as training data.

Texts come from escalations (the posts tier 1 was unsure of), review items and reviewers'
labels; labels come from the final verdicts of the frontier, cache and human tiers and
from `moderation.labels`, joined by `post_id`. A human label wins over a model's. Tier 1's
own verdicts are never labels (training on them would teach the model its own mistakes).

Posts that tier 1 decided itself and reviewers audited are the one unbiased sample of
tier 1's error: they are written apart (`audit.jsonl`) and kept out of train and test.
The rest is deduplicated by normalized text and split by a hash of that text, so a text
never sits on both sides. This is the only place modpipe stores post texts; records older
than `learning.text_retention_days` are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from modpipe.core.decoding import load_object
from modpipe.core.errors import InvalidRecord, StackError
from modpipe.core.kafka import access, consumer_options, topic_partitions
from modpipe.core.progress import Progress, no_progress
from modpipe.core.records import MAX_DEPTH
from modpipe.core.settings import KafkaSettings, Settings
from modpipe.core.text import normalize

log = logging.getLogger(__name__)

MODEL_TIERS = ("frontier", "cache")  # verdicts that label a post; "small" and "fallback" do not
RANK = {"human": 2, "frontier": 1, "cache": 1}
_MAX_RECORD_BYTES = 16 * 1024 * 1024  # a bound on memory; the broker caps records far lower


@dataclass(frozen=True)
class Row:
    """One labelled post as written to JSONL."""

    text: str
    label: int
    categories: list[str]
    source: str  # human | frontier | cache
    post_id: str


@dataclass
class Dataset:
    """Train, test and audit rows, with where every row came from and what was dropped."""

    train: list[Row] = field(default_factory=list)
    test: list[Row] = field(default_factory=list)
    audit: list[Row] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Every record on the pipeline's topics up to their ends when read, as JSON objects
    with the Kafka timestamp in seconds."""

    escalations: list[tuple[float, dict[str, Any]]]
    verdicts: list[tuple[float, dict[str, Any]]]
    review: list[tuple[float, dict[str, Any]]]
    labels: list[tuple[float, dict[str, Any]]]


async def read_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    timeout_s: float = 60.0,
    progress: Progress = no_progress,
) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Each topic in `names` from its beginning to its end at the time of the call; values
    that are not JSON objects are skipped (the workers already dead-lettered them). The
    records read are counted to `progress`."""
    names = list(names)
    out: dict[str, list[tuple[float, dict[str, Any]]]] = {n: [] for n in names}
    consumer = AIOKafkaConsumer(**consumer_options(kafka, None))  # committed transactions only
    try:
        async with access(kafka):
            parts = await topic_partitions(kafka, names)
            await consumer.start()
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > 0}
        total, done = sum(ends.values()), 0
        progress("reading the topics", 0, total)
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise StackError(f"reading {names} took over {timeout_s:.0f}s")
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        _keep(out[tp.topic], m.timestamp / 1000, m.value)
                done += len(messages)
            progress("reading the topics", min(done, total), total)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    except KafkaError as exc:
        raise StackError(f"cannot read {names} from Kafka at {kafka.bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
    return out


def _keep(into: list[tuple[float, dict[str, Any]]], ts: float, raw: bytes | None) -> None:
    # The workers' own strict decoding: anything they would dead-letter is skipped here.
    try:
        value = load_object(raw, _MAX_RECORD_BYTES, MAX_DEPTH + 2)
    except InvalidRecord:
        return
    into.append((ts, value))


async def snapshot(settings: Settings, progress: Progress = no_progress) -> Snapshot:
    """The four topics the dataset is built from."""
    t = settings.topics
    names = [t.escalations, t.verdicts, t.review, t.labels]
    got = await read_topics(settings.kafka, names, progress=progress)
    return Snapshot(got[t.escalations], got[t.verdicts], got[t.review], got[t.labels])


def _post(value: dict[str, Any]) -> tuple[str, str] | None:
    post = value.get("post")
    if not isinstance(post, dict):
        return None
    pid, text = post.get("post_id"), post.get("text")
    if isinstance(pid, str) and isinstance(text, str) and text.strip():
        return pid, text
    return None


def label_posts(
    snap: Snapshot, now_s: float, retention_days: float
) -> tuple[list[tuple[Row, bool]], Counter[str]]:
    """Labelled posts (and whether each was an audit) by joining the snapshot on post_id."""
    horizon = now_s - retention_days * 86400
    dropped: Counter[str] = Counter()
    texts: dict[str, str] = {}
    audited: set[str] = set()
    for kind, records in (("escalation", snap.escalations), ("review", snap.review)):
        for ts, value in records:
            got = _post(value)
            if got is None:
                dropped[f"{kind}_unreadable"] += 1
            elif ts < horizon:
                dropped["expired"] += 1
            else:
                texts[got[0]] = got[1]
                if kind == "review" and value.get("reason") == "audit":
                    audited.add(got[0])
    best: dict[str, tuple[int, float, Row]] = {}

    def offer(pid: str, ts: float, action: Any, categories: Any, source: str) -> None:
        if action not in ("allow", "block"):
            dropped[f"{source}_{action}"] += 1
            return
        if pid not in texts:
            dropped["label_without_text"] += 1
            return
        cats = [str(c) for c in categories] if isinstance(categories, list) else []
        row = Row(
            texts[pid], int(action == "block"), cats if action == "block" else [], source, pid
        )
        rank = (RANK[source], ts)
        if pid not in best or rank >= best[pid][:2]:
            best[pid] = (*rank, row)

    for ts, v in snap.verdicts:
        tier = v.get("tier")
        if ts >= horizon and isinstance(v.get("post_id"), str) and tier in (*MODEL_TIERS, "human"):
            offer(v["post_id"], ts, v.get("action"), v.get("categories"), str(tier))
    for ts, v in snap.labels:
        got = _post(v)
        if got is None or ts < horizon:
            dropped["label_unreadable" if got is None else "expired"] += 1
            continue
        texts.setdefault(*got)
        if v.get("reason") == "audit":
            audited.add(got[0])
        offer(got[0], ts, v.get("action"), v.get("categories"), "human")
    rows = [(row, pid in audited and row.source == "human") for pid, (*_, row) in best.items()]
    return rows, dropped


def in_test(text: str, test_share: float, salt: str = "test") -> bool:
    """Whether a text belongs to the test split: a stable hash of its normalized form.

    Each kind of split has its own `salt`, so that splits made one after the other are
    independent (the test split of a stream that was itself cut from a set by a hash).
    """
    digest = hashlib.sha256(f"{salt}\x1f{normalize(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_share


def assemble(labelled: list[tuple[Row, bool]], test_share: float) -> Dataset:
    """Deduplicate by normalized text (human labels first, then the latest), then split."""
    chosen: dict[tuple[bool, str], Row] = {}
    duplicates = 0
    for row, audit in labelled:
        key = (audit, normalize(row.text))
        held = chosen.get(key)
        if held is not None:
            duplicates += 1
            if RANK[held.source] > RANK[row.source]:
                continue
        chosen[key] = row
    audit_texts = {text for audit, text in chosen if audit}
    data = Dataset()
    for (audit, text), row in chosen.items():
        if audit:
            data.audit.append(row)
        elif text in audit_texts:
            duplicates += 1
        elif in_test(row.text, test_share):
            data.test.append(row)
        else:
            data.train.append(row)
    data.counts = {
        "train": len(data.train),
        "test": len(data.test),
        "audit": len(data.audit),
        "duplicates": duplicates,
        "by_source": dict(Counter(r.source for r, _ in labelled)),
        "positive_rate": sum(r.label for r in data.train + data.test)
        / max(1, len(data.train) + len(data.test)),
    }
    return data


def build(snap: Snapshot, settings: Settings, now_s: float | None = None) -> Dataset:
    """The dataset from a snapshot of the topics, under the configured retention and split."""
    learning = settings.learning
    labelled, dropped = label_posts(snap, now_s or time.time(), learning.text_retention_days)
    data = assemble(labelled, learning.test_share)
    data.counts["dropped"] = dict(dropped)
    return data


def write(data: Dataset, out: Path) -> dict[str, Path]:
    """`train.jsonl`, `test.jsonl`, `audit.jsonl` and `manifest.json` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("train", "test", "audit"):
        path = out / f"{name}.jsonl"
        rows: list[Row] = getattr(data, name)
        path.write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rows))
        paths[name] = path
    manifest = out / "manifest.json"
    manifest.write_text(json.dumps({**data.counts, "built_at": time.time()}, indent=2) + "\n")
    paths["manifest"] = manifest
    return paths


def read_rows(path: Path) -> list[Row]:
    """Rows written by `write`."""
    return [Row(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
