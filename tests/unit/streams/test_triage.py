"""Triage of a batch with a fake classifier: no Kafka."""

import json
from collections.abc import Sequence

import pytest

from classifiers import Classification
from modpipe.core.errors import ClassifierError, ClassifierUnavailable
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming
from modpipe.core.settings import Settings
from streams.triage import Triage


class FakeClassifier:
    """Scores a text by a number written in it: 'p=0.5 ...'."""

    model = "fake"
    kind = "cpu"

    def __init__(self, fail_batch: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail_batch = fail_batch

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        self.batches.append(list(texts))
        if self.fail_batch:
            raise ClassifierUnavailable("backend down")
        out: list[Classification | ClassifierError] = []
        for t in texts:
            if t.startswith("p="):
                out.append(Classification({"harassment": float(t.split()[0][2:])}, 3))
            else:
                out.append(ClassifierError("cannot score this one"))
        return out

    async def aclose(self) -> None:
        pass


def msg(value: bytes | None, offset: int) -> Incoming:
    return Incoming(b"k", value, "posts", 0, offset, 0.0)


def post(pid: str, text: str) -> bytes:
    return json.dumps({"post_id": pid, "text": text}).encode()


async def test_batch_routes_each_post_and_classifies_once(settings: Settings) -> None:
    clf = FakeClassifier()
    triage = Triage(settings, clf, Metrics())
    batch = [
        msg(post("a", "p=0.01 hello"), 0),
        msg(post("b", "p=0.99 awful"), 1),
        msg(post("c", "p=0.5 hmm"), 2),
        msg(b"nope", 3),
    ]
    result = await triage.process(batch)
    assert len(clf.batches) == 1 and len(clf.batches[0]) == 3
    by_topic: dict[str, list[dict]] = {}
    for r in result.records:
        by_topic.setdefault(r.topic, []).append(json.loads(r.value))
    t = settings.topics
    verdicts = {v["post_id"]: v for v in by_topic[t.verdicts]}
    assert verdicts["a"]["action"] == "allow" and verdicts["a"]["tier"] == "small"
    assert verdicts["b"]["action"] == "block" and verdicts["b"]["categories"] == ["harassment"]
    assert [e["post"]["post_id"] for e in by_topic[t.escalations]] == ["c"]
    assert by_topic[t.dlq][0]["offset"] == 3
    assert (result.verdicts, result.escalated, result.dlq) == (2, 1, 1)


@pytest.mark.parametrize("policy", ["escalate", "review"])
async def test_classifier_failure_never_publishes_a_guess(make_settings, policy: str) -> None:
    settings = make_settings(triage={"on_classifier_failure": policy, "audit_rate": 0.0})
    triage = Triage(settings, FakeClassifier(fail_batch=True), Metrics())
    result = await triage.process([msg(post("a", "p=0.01 hello"), 0)])
    topics = [r.topic for r in result.records]
    if policy == "escalate":
        assert topics == [settings.topics.escalations]
        assert json.loads(result.records[0].value)["reason"] == "classifier_failed"
    else:
        verdict = json.loads(result.records[1].value)
        assert (verdict["action"], verdict["tier"]) == ("review", "fallback")
        assert topics == [settings.topics.review, settings.topics.verdicts]


async def test_one_unscorable_post_does_not_fail_the_batch(settings: Settings) -> None:
    triage = Triage(settings, FakeClassifier(), Metrics())
    result = await triage.process([msg(post("a", "???"), 0), msg(post("b", "p=0.0 ok"), 1)])
    assert result.escalated == 1 and result.verdicts == 1


async def test_audit_sample_goes_to_review(make_settings) -> None:
    settings = make_settings(triage={"audit_rate": 1.0})
    triage = Triage(settings, FakeClassifier(), Metrics())
    result = await triage.process([msg(post("a", "p=0.01 hi"), 0)])
    review = [json.loads(r.value) for r in result.records if r.topic == settings.topics.review]
    assert review[0]["reason"] == "audit"
    assert review[0]["proposed"]["action"] == "allow"


async def test_the_audit_draw_is_a_function_of_the_post_id(make_settings) -> None:
    # A redelivered post must be audited (or not) again: the draw is a hash, not a die.
    settings = make_settings(triage={"audit_rate": 0.3})
    posts = [msg(post(f"p{i}", "p=0.01 hi"), i) for i in range(400)]

    def audited(result) -> set[str]:
        return {
            json.loads(r.value)["post"]["post_id"]
            for r in result.records
            if r.topic == settings.topics.review
        }

    first = audited(await Triage(settings, FakeClassifier(), Metrics()).process(posts))
    again = audited(await Triage(settings, FakeClassifier(), Metrics()).process(posts[::-1]))
    assert first == again
    assert 60 < len(first) < 180  # about 30% of 400


class ControversialClassifier(FakeClassifier):
    """A guard that allows by the bands but says its own verdict needs the next tier."""

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({}, 3, p_violation=0.2, escalate="controversial") for _ in texts]


async def test_a_guard_escalation_goes_to_tier_2_whatever_the_bands(settings: Settings) -> None:
    # Scores of {} route to allow; Qwen3Guard's "Controversial" must still escalate.
    triage = Triage(settings, ControversialClassifier(), Metrics())
    result = await triage.process([msg(post("a", "p=0.01 hmm"), 0)])
    assert [r.topic for r in result.records] == [settings.topics.escalations]
    escalation = json.loads(result.records[0].value)
    assert (escalation["reason"], escalation["p_violation"]) == ("controversial", 0.2)
    assert (result.verdicts, result.escalated) == (0, 1)
