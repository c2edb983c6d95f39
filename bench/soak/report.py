"""The soak's verdict on what it read back: lost posts, duplicates, conflicts, review items
shown twice or never decided, and the evidence for each."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from typing import Any

from bench.soak.stack import Supervisor
from bench.soak.traffic import Copy, Ledger, Seen


def duplicates(copies: dict[Any, list[Copy]]) -> dict[Any, list[Copy]]:
    """The keys seen more than once, with every copy."""
    return {k: v for k, v in copies.items() if len(v) > 1}


def conflicts(seen: list[Seen]) -> list[tuple[Seen, Seen]]:
    """Pairs (earlier, later) of different actions where the later does not name the
    earlier in `supersedes`, directly or through the verdicts it supersedes."""
    ordered = sorted(seen, key=lambda v: v.where.offset)
    replaces = {v.verdict_id: v.supersedes for v in ordered if v.verdict_id}
    out = []
    for j, later in enumerate(ordered):
        for earlier in ordered[:j]:
            if earlier.action == later.action:
                continue
            named, hops = later.supersedes, 0
            while named is not None and named != earlier.verdict_id and hops < 16:
                named, hops = replaces.get(named), hops + 1
            if earlier.verdict_id == "" or named != earlier.verdict_id:
                out.append((earlier, later))
    return out


def verdict_copies(seen: list[Seen]) -> list[list[Seen]]:
    """Groups of verdicts that are copies of one another: the same verdict_id (for the
    first final verdict, `=`), or for verdicts without an id, the same tier and action."""
    groups: dict[tuple[str, str, str], list[Seen]] = defaultdict(list)
    for v in seen:
        key = (v.verdict_id, "", "") if v.verdict_id else ("", v.tier, v.action)
        groups[key].append(v)
    return [g for g in groups.values() if len(g) > 1]


def where_from(ledger: Ledger, pid: str) -> str:
    """Where a post was published: partition, offset, seconds into the run."""
    got = ledger.inputs.get(pid)
    return "?" if got is None else f"posts p{got[0]}@{got[1]}, acked at {got[2]:.1f}s"


def before(happened: list[tuple[float, str]], ts_ms: int, window_s: float = 60.0) -> str:
    """The planned events in the `window_s` before a record's timestamp (else the last)."""
    near = [
        f"{what} ({ts_ms / 1000 - at:.1f}s before)"
        for at, what in happened
        if 0 <= ts_ms / 1000 - at <= window_s
    ]
    if near:
        return ", ".join(near)
    last = [
        f"{what} ({ts_ms / 1000 - at:.1f}s before)" for at, what in happened if at <= ts_ms / 1000
    ]
    return last[-1] if last else "none"


def duplicate_counts(ledger: Ledger) -> tuple[dict[str, list[list[Seen]]], dict[str, int]]:
    """The posts with duplicate verdicts, and the extra copies per topic."""
    dup_verdicts = {pid: g for pid, seen in ledger.verdicts.items() if (g := verdict_copies(seen))}
    dup_topics = {
        "verdicts": sum(len(c) - 1 for g in dup_verdicts.values() for c in g),
        "escalations": sum(len(c) - 1 for c in duplicates(ledger.escalations).values()),
        "review items": sum(len(c) - 1 for c in duplicates(ledger.reviews).values()),
        "labels": sum(len(c) - 1 for c in duplicates(ledger.labels).values()),
        "dead letters": sum(len(c) - 1 for c in duplicates(ledger.letters).values()),
    }
    return dup_verdicts, dup_topics


def clashes_of(ledger: Ledger) -> tuple[dict[str, list[tuple[Seen, Seen]]], Counter[str]]:
    """Conflicting verdicts per post, and how many of each kind (tier:action then ...)."""
    clashes = {
        pid: c for pid, seen in ledger.verdicts.items() if len(seen) > 1 if (c := conflicts(seen))
    }
    clash_kinds: Counter[str] = Counter(
        f"{e.tier}:{e.action} then {later.tier}:{later.action}"
        for pairs in clashes.values()
        for e, later in pairs
    )
    return clashes, clash_kinds


def report(
    args: argparse.Namespace,
    ledger: Ledger,
    supervisor: Supervisor,
    rate: float,
    drain_s: float,
    down: dict[str, float],
    codes: dict[str, int | None],
    backlog: dict[str, int],
    happened: list[tuple[float, str]],
) -> int:
    lost_posts, lost_letters = ledger.missing()
    undecided = ledger.undecided_reviews()
    dup_verdicts, dup_topics = duplicate_counts(ledger)
    clashes, clash_kinds = clashes_of(ledger)
    twice = len(ledger.shown_again)
    kills = {p.name: p.kills for p in supervisor.procs.values()}
    deaths = {p.name: p.deaths for p in supervisor.procs.values()}
    total_dup = sum(dup_topics.values())
    tiers: Counter[str] = Counter(seen[0].tier for seen in ledger.verdicts.values())
    lines = [
        f"duration {args.duration:.0f}s, rate {args.rate}/s (achieved {rate:.0f}/s), "
        f"bad {args.bad:.0%}",
        f"published            {ledger.published} ({ledger.bad} bad records)",
        f"final verdicts       {len(ledger.verdicts)} posts of {len(ledger.expect_verdict)} "
        f"(first verdict by tier {dict(tiers)})",
        f"dead letters         {len(ledger.letters)} of {len(ledger.expect_letter)}",
        f"review items         {len(ledger.reviews)} posts on the topic, "
        f"{len(ledger.decided)} decided by the reviewer, {len(ledger.human)} human verdicts",
        f"lost                 {lost_posts + lost_letters} "
        f"({lost_posts} posts, {lost_letters} refused records); "
        f"review items never decided {len(undecided)}",
        f"duplicates           {total_dup} {dup_topics}",
        f"conflicting verdicts {sum(len(c) for c in clashes.values())} in {len(clashes)} posts "
        f"{dict(clash_kinds)}",
        f"review items twice   {twice} (shown to the reviewer again after its decision)",
        f"kills (kill -9)      {kills}",
        f"unplanned deaths     {deaths}",
        "restarts             "
        + ", ".join(f"{who} down {s:.1f}s" for who, s in down.items())
        + f" (redis: {args.redis_restart})",
        f"drained in           {drain_s:.1f}s after publishing stopped "
        f"(group lag at the end: {backlog}; a transaction's commit marker is 1 per partition)",
        f"final stop codes     {codes}",
        f"tracebacks in logs   {supervisor.tracebacks()}",
    ]
    print("\n".join(lines), flush=True)
    evidence(ledger, dup_verdicts, clashes, undecided, happened, lost_posts)
    died = any(deaths.values())
    bad = lost_posts + lost_letters + len(undecided) + total_dup + len(clashes) + twice
    return 0 if bad == 0 and not died else 1


def evidence(
    ledger: Ledger,
    dup_verdicts: dict[str, list[list[Seen]]],
    clashes: dict[str, list[tuple[Seen, Seen]]],
    undecided: list[str],
    happened: list[tuple[float, str]],
    lost_posts: int,
    most: int = 10,
) -> None:
    """Examples of whatever went wrong: post ids, partition/offset of each copy, the last
    planned event before the second copy was written."""
    out: list[str] = []
    for pid, groups in list(dup_verdicts.items())[:most]:
        for g in groups:
            copies = ", ".join(
                f"p{v.where.partition}@{v.where.offset} {v.tier}:{v.action} "
                f"crc={v.crc:08x} ts={v.where.ts_ms}"
                for v in g
            )
            out.append(
                f"  duplicate verdict {pid!r} (input {where_from(ledger, pid)}): {copies}; "
                f"before the 2nd: {before(happened, g[1].where.ts_ms)}"
            )
    per_topic: tuple[tuple[str, dict[Any, list[Copy]]], ...] = (
        ("escalation", ledger.escalations),
        ("review item", ledger.reviews),
        ("label", ledger.labels),
        ("dead letter", ledger.letters),
    )
    for name, records in per_topic:
        for key, cs in list(duplicates(records).items())[:most]:
            where = ", ".join(f"p{c.partition}@{c.offset}" for c in cs)
            out.append(
                f"  duplicate {name} {key!r}: {where}; "
                f"before the 2nd: {before(happened, cs[1].ts_ms)}"
            )
    for pid, pairs in list(clashes.items())[:most]:
        for e, later in pairs:
            out.append(
                f"  conflict {pid!r}: p{e.where.partition}@{e.where.offset} "
                f"{e.tier}:{e.action} id={e.verdict_id or '-'} then "
                f"p{later.where.partition}@{later.where.offset} {later.tier}:{later.action} "
                f"id={later.verdict_id or '-'} supersedes={later.supersedes} "
                f"(input {where_from(ledger, pid)}); "
                f"before the later: {before(happened, later.where.ts_ms)}"
            )
    for pid, item, at in ledger.shown_again[:most]:
        out.append(f"  review item shown again {pid!r} (item {item}) at {at:.1f}s")
    for pid in undecided[:most]:
        where = ", ".join(f"p{c.partition}@{c.offset}" for c in ledger.reviews[pid])
        out.append(f"  review item never decided {pid!r}: {where}")
    if lost_posts:
        lost = [pid for pid in ledger.expect_verdict if pid not in ledger.verdicts][:most]
        out.append(f"  lost posts (first {len(lost)}): {lost}")
    if out:
        print("evidence:\n" + "\n".join(out), flush=True)
    print("events: " + "; ".join(what for _, what in happened), flush=True)
