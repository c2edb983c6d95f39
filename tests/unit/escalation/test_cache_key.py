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
