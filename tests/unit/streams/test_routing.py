from modpipe.core.settings import Band, RoutingSettings
from streams.routing import route

BANDS = RoutingSettings(
    allow_below=0.3,
    block_above=0.9,
    per_category={"hate": Band(allow_below=0.1, block_above=0.8)},
)


def test_all_below_allow_line_is_allowed() -> None:
    assert route({"harassment": 0.29, "hate": 0.09}, BANDS).route == "allow"


def test_any_category_at_block_line_blocks_even_if_another_is_borderline() -> None:
    decision = route({"harassment": 0.5, "hate": 0.8}, BANDS)
    assert (decision.route, decision.categories) == ("block", ["hate"])


def test_borderline_category_escalates() -> None:
    decision = route({"harassment": 0.3, "hate": 0.05}, BANDS)
    assert (decision.route, decision.categories) == ("escalate", ["harassment"])


def test_per_category_band_overrides_default() -> None:
    assert route({"hate": 0.15}, BANDS).route == "escalate"
    assert route({"harassment": 0.15}, BANDS).route == "allow"


def test_no_scores_is_allow() -> None:
    assert route({}, BANDS).route == "allow"
