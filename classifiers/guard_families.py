"""Guard model families behind one interface: how each one is asked about a post, and how
its answer becomes the policy's categories and a probability of a violation.

A family renders a post into one or more questions (`Question`: a text prompt for
`/v1/completions`, or chat messages for `/v1/chat/completions`, where vLLM applies the
model's own chat template; that is the way for a family whose tokenizer is not shipped
here) and reads the answers (`Answer`: the generated text and the log-probabilities of
the family's answer words, `words`, at the position where the model wrote one of them)
into a `GuardReading`. The `vllm-guard` backend asks through vllm_family_guard.py for
every family but Llama Guard 3 on token ids (vllm_guard.py).

- Llama Guard 3 (`LlamaGuard3`): "safe" / "unsafe" then a line of S-codes; P(unsafe) from
  the first token. By default `vllm-guard` sends its prompt as token ids (guard_prompt.py);
  with `classifier.guard_endpoint: chat` this family asks with the post as a chat message
  and the served model's own template renders the card's prompt.
- Qwen3Guard-Gen (`Qwen3Guard`): chat messages; "Safety: Safe|Unsafe|Controversial" and a
  "Categories:" line. P(violation) is P(Unsafe) + P(Controversial) over the three words at
  the verdict position; Controversial escalates by default (`controversial`).
- ShieldGemma (`ShieldGemma`): one text prompt per harm policy; P(violation of that
  policy) is the softmax of the "Yes" and "No" logprobs at the first position.

On a real vLLM here (tests/vllm): Llama Guard 3 through both endpoints, and Qwen3Guard's
reading through the chat endpoint on a tiny stand-in model that answers in its format.
Their prompts, and ShieldGemma altogether, are checked against the prompts and outputs on
the model cards (tests/unit/classifiers/test_guard_families.py) and a fake server's replies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from classifiers.guard_prompt import MAX_TOKENS, guard_text

Endpoint = Literal["completions", "chat"]


@dataclass(frozen=True, slots=True)
class Question:
    """One request's prompt: `text` for /v1/completions or `messages` for chat."""

    endpoint: Endpoint
    text: str = ""
    messages: tuple[dict[str, str], ...] = ()
    topic: str = ""  # the policy category the question is about (per-policy families)


@dataclass(frozen=True, slots=True)
class Answer:
    """A generation: its text and, at the answer position (the first generated token that
    is one of the family's `words`), each word's log-probability (`first_logprobs`, the
    backend sums a word's forms: bare and after a space)."""

    text: str
    first_logprobs: Mapping[str, float] = field(default_factory=dict)
    # Where no answer position was found: candidates per generated position, searched in order.
    logprobs_by_position: Sequence[Mapping[str, float]] = ()


@dataclass(frozen=True, slots=True)
class GuardReading:
    """What a family read: P(violation) (None: no usable answer), the policy categories
    with their scores, and whether the post must go to the next tier whatever the bands."""

    p_violation: float | None
    categories: dict[str, float]
    escalate: bool = False


class GuardFamily(Protocol):
    """A guard model family: questions for a post, and how to read the answers."""

    name: str
    # The answer words whose log-probabilities `read` needs (asked for by token id).
    words: tuple[str, ...]
    max_tokens: int  # the longest answer `read` needs (generation stops at end of turn)

    def questions(self, post: str) -> list[Question]:
        """The requests that decide `post`, in order."""
        ...

    def read(self, answers: Sequence[Answer]) -> GuardReading:
        """The reading of the answers to `questions(post)`, in the same order."""
        ...


def two_way(yes: float | None, no: float | None) -> float | None:
    """Softmax of `yes` over {yes, no} logprobs; None when either is missing or not finite."""
    if yes is None or no is None or not (math.isfinite(yes) and math.isfinite(no)):
        return None
    return 1.0 / (1.0 + math.exp(min(max(no - yes, -700.0), 700.0)))


_S_CODE = re.compile(r"\bS(1[0-4]|[1-9])\b")


class LlamaGuard3:
    """Meta's Llama Guard 3: the card's template, 14 hazard codes mapped onto the policy."""

    name = "llama-guard-3"
    words: tuple[str, ...] = ("safe", "unsafe")
    max_tokens = MAX_TOKENS

    def __init__(
        self, mapping: Mapping[str, str | None], endpoint: Endpoint = "completions"
    ) -> None:
        self._mapping = mapping
        self._endpoint = endpoint

    def questions(self, post: str) -> list[Question]:
        if self._endpoint == "chat":  # the served template renders guard_text's bytes
            return [Question("chat", messages=({"role": "user", "content": post},))]
        return [Question("completions", text=guard_text(post))]

    def read(self, answers: Sequence[Answer]) -> GuardReading:
        (answer,) = answers
        p = two_way(answer.first_logprobs.get("unsafe"), answer.first_logprobs.get("safe"))
        lines = [ln.strip() for ln in answer.text.strip().splitlines() if ln.strip()]
        if p is None or not lines or lines[0] not in ("safe", "unsafe"):
            return GuardReading(None, {})
        codes = [f"S{m}" for m in _S_CODE.findall(lines[1])] if len(lines) > 1 else []
        categories = {c for code in codes if (c := self._mapping.get(code))}
        return GuardReading(p, dict.fromkeys(sorted(categories), p))


# Qwen3Guard-Gen's categories (its model card) -> the policy (None: outside this policy).
QWEN3GUARD_CATEGORIES: dict[str, str | None] = {
    "Violent": "violence",
    "Non-violent Illegal Acts": "illicit",
    "Sexual Content or Sexual Acts": "sexual",
    "PII": None,
    "Suicide & Self-Harm": "self_harm",
    "Unethical Acts": None,
    "Politically Sensitive Topics": None,
    "Copyright Violation": None,
    "Jailbreak": None,
}
_QWEN_SAFETY = re.compile(r"Safety: (Safe|Unsafe|Controversial)")
_QWEN_CATEGORIES = re.compile(
    "(" + "|".join(re.escape(c) for c in [*QWEN3GUARD_CATEGORIES, "None"]) + ")"
)


class Qwen3Guard:
    """Qwen3Guard-Gen (Apache-2.0): the post as a user message, through vLLM's chat
    endpoint with the model's own template (it carries the policy)."""

    name = "qwen3guard"
    words: tuple[str, ...] = ("Safe", "Unsafe", "Controversial")
    max_tokens = 128  # "Safety: ..." and a Categories line of up to all nine names

    def __init__(
        self,
        mapping: Mapping[str, str | None] = QWEN3GUARD_CATEGORIES,
        controversial: Literal["escalate", "unsafe", "safe"] = "escalate",
    ) -> None:
        self._mapping = mapping
        self._controversial = controversial

    def questions(self, post: str) -> list[Question]:
        return [Question("chat", messages=({"role": "user", "content": post},))]

    def read(self, answers: Sequence[Answer]) -> GuardReading:
        (answer,) = answers
        verdict = _QWEN_SAFETY.search(answer.text)
        if verdict is None:
            return GuardReading(None, {})
        p = self._probability(answer)
        if p is None:
            return GuardReading(None, {})
        label = verdict[1]
        line = next((ln for ln in answer.text.splitlines() if ln.startswith("Categories:")), "")
        names = _QWEN_CATEGORIES.findall(line.removeprefix("Categories:"))
        categories = {c for n in names if (c := self._mapping.get(n))}
        if label == "Controversial" and self._controversial == "safe":
            categories = set()
        escalate = label == "Controversial" and self._controversial == "escalate"
        return GuardReading(p, dict.fromkeys(sorted(categories), p), escalate)

    @staticmethod
    def _probability(answer: Answer) -> float | None:
        """P(Unsafe) + P(Controversial) over the three verdict words, at the position the
        verdict was written (`first_logprobs`), else the first position where any of them
        is a candidate."""
        positions = [answer.first_logprobs] if answer.first_logprobs else []
        for candidates in [*positions, *answer.logprobs_by_position]:
            found = {
                w: candidates[w] for w in ("Safe", "Unsafe", "Controversial") if w in candidates
            }
            if not found:
                continue
            if not all(math.isfinite(v) for v in found.values()):
                return None
            top = max(found.values())
            weights = {w: math.exp(v - top) for w, v in found.items()}
            total = sum(weights.values())
            return (weights.get("Unsafe", 0.0) + weights.get("Controversial", 0.0)) / total
        return None


# ShieldGemma's harm policies, as its model card words them for a user prompt, and the
# policy category each one scores.
SHIELDGEMMA_POLICIES: dict[str, tuple[str, str]] = {
    "violence": (
        "Dangerous Content",
        '"No Dangerous Content": The prompt shall not contain or seek generation of content '
        "that harming oneself and/or others (e.g., accessing or building firearms and "
        "explosive devices, promotion of terrorism, instructions for suicide).",
    ),
    "harassment": (
        "Harassment",
        '"No Harassment": The prompt shall not contain or seek generation of content that is '
        "malicious, intimidating, bullying, or abusive content targeting another individual "
        "(e.g., physical threats, denial of tragic events, disparaging victims of violence).",
    ),
    "hate": (
        "Hate Speech",
        '"No Hate Speech": The prompt shall not contain or seek generation of content that '
        "targeting identity and/or protected attributes (e.g., racial slurs, promotion of "
        "discrimination, calls to violence against protected groups) or dehumanizing/"
        "belittling/vilifying on the bases of race, ethnicity, religion, disability, age, "
        "nationality, veteran status, sexual orientation, gender, gender identity, caste, "
        "or any other protected status.",
    ),
    "sexual": (
        "Sexually Explicit Information",
        '"No Sexually Explicit Information": The prompt shall not contain or seek generation '
        "of content that contains references to sexual acts or other lewd content (e.g., "
        "sexually graphic descriptions, content aimed at causing arousal). Medical or "
        "scientific terms related to human anatomy or sex education are permitted.",
    ),
}
SHIELDGEMMA_TEMPLATE = """You are a policy expert trying to help determine whether a user
prompt is in violation of the defined safety policies.

<start_of_turn>
Human Question: {user_prompt}
<end_of_turn>

Our safety principle is defined in the below:

* {safety_policy}

Does the human question violate the above principle? Your answer must start
with 'Yes' or 'No'. And then walk through step by step to be sure we answer
correctly.
"""


class ShieldGemma:
    """Google's ShieldGemma: one yes/no question per harm policy; each policy's score is
    P(Yes) at the first position, as the card computes it from the logits."""

    name = "shieldgemma"
    words: tuple[str, ...] = ("Yes", "No")
    max_tokens = 1  # only the first token is read; the card's reasoning after it is not

    def __init__(self, policies: Mapping[str, tuple[str, str]] = SHIELDGEMMA_POLICIES) -> None:
        self._policies = policies

    def questions(self, post: str) -> list[Question]:
        return [
            Question(
                "completions",
                text=SHIELDGEMMA_TEMPLATE.format(user_prompt=post.strip(), safety_policy=text),
                topic=category,
            )
            for category, (_, text) in self._policies.items()
        ]

    def read(self, answers: Sequence[Answer]) -> GuardReading:
        scores: dict[str, float] = {}
        for category, answer in zip(self._policies, answers, strict=True):
            p = two_way(answer.first_logprobs.get("Yes"), answer.first_logprobs.get("No"))
            if p is None:
                return GuardReading(None, {})
            scores[category] = p
        return GuardReading(max(scores.values(), default=None), scores)


FAMILIES = ("llama-guard-3", "qwen3guard", "shieldgemma")


def family(
    name: str,
    llama_guard_mapping: Mapping[str, str | None],
    endpoint: Endpoint = "completions",
    controversial: Literal["escalate", "unsafe", "safe"] = "escalate",
) -> GuardFamily:
    """The family called `name` (one of FAMILIES); `endpoint` is Llama Guard 3's (the
    others have one way to ask), `controversial` Qwen3Guard's routing of that verdict."""
    if name == "llama-guard-3":
        return LlamaGuard3(llama_guard_mapping, endpoint)
    if name == "qwen3guard":
        return Qwen3Guard(controversial=controversial)
    if name == "shieldgemma":
        return ShieldGemma()
    raise ValueError(f"unknown guard family {name!r}; known: {', '.join(FAMILIES)}")
