from typing import Any

import pytest

from escalation.cache import cache_key, normalize


def test_normalization_folds_case_width_spacing_and_zero_width() -> None:
    assert normalize("  Hello\u200b  WORLD\t\n") == "hello world"
    assert normalize("ｆｕｌｌ ｗｉｄｔｈ") == "full width"
    assert normalize("Stra\u00dfe") == normalize("STRASSE")
    assert normalize("co\u00adop\ufeff") == "coop"


def test_key_depends_on_policy_provider_model_and_text() -> None:
    base = cache_key("v1", "chat", "m", "Hello  world")
    assert base == cache_key("v1", "chat", "m", "hello world\u200b")
    assert (
        len(
            {
                base,
                cache_key("v2", "chat", "m", "hello world"),
                cache_key("v1", "moderation", "m", "hello world"),
                cache_key("v1", "chat", "m2", "hello world"),
                cache_key("v1", "chat", "m", "hello there"),
            }
        )
        == 5
    )


def test_fields_cannot_run_into_each_other() -> None:
    # Concatenated without a separator, model "m" + text "2x" would read as "m2" + "x".
    assert cache_key("v1", "chat", "m", "2x") != cache_key("v1", "chat", "m2", "x")
    assert cache_key("v1", "chat", "m", "x") != cache_key("v1", "cha", "tm", "x")
    assert cache_key("v1", "chat", "m", "x") != cache_key("v", "1chat", "m", "x")


def test_key_does_not_contain_the_text() -> None:
    key = cache_key("v1", "chat", "m", "secretword")
    assert "secret" not in key and len(key) == 64


def test_normalization_never_sorts_a_long_run_of_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Canonical reordering is quadratic in a run of combining marks: the text reaching
    # NFKC must have none longer than a few, whatever the post holds.
    import unicodedata

    import modpipe.core.text as text_module

    seen: list[str] = []
    real = text_module.tables()

    class Spy:
        def __init__(self, nfkc: Any) -> None:
            self.nfkc = nfkc

        def normalize(self, text: str) -> str:
            seen.append(text)
            return str(self.nfkc.normalize(text))

    spied = real._replace(nfkc=Spy(real.nfkc), nfkc_known=Spy(real.nfkc_known))
    monkeypatch.setattr(text_module, "tables", lambda: spied)
    for text in ("a" + "\u0301\u0316" * 5000, "b" + "\u0f73" * 5000, "c" + "\u0316" * 9000):
        seen.clear()
        normalize(text)
        longest = max(_longest_mark_run(unicodedata.normalize("NFKD", t)) for t in seen)
        assert longest <= 2 * 8 + 2  # a cut every 8, each mark decomposing to at most 2


def _longest_mark_run(text: str) -> int:
    import unicodedata

    longest = run = 0
    for char in text:
        run = run + 1 if unicodedata.combining(char) else 0
        longest = max(longest, run)
    return longest


def test_long_compatibility_forms_stay_short_and_distinct() -> None:
    # U+FDFA is 18 characters after NFKC: a post of them must not grow eighteenfold.
    assert len(normalize("\ufdfa" * 1000)) == 1000
    assert normalize("\ufdfa") != normalize("\ufdfb")
    assert normalize("ﬁ") == "fi"  # short compatibility forms still fold
