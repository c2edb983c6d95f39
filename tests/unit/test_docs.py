"""The front page and the docs site stay true to the code: the generated reference pages
equal what the code gives now, and the README stays a short front page whose links
resolve. (`make docs` checks every link inside the site with mkdocs --strict.)"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_match_the_code() -> None:
    gen = _generator()
    for name, build in gen.PAGES.items():
        page = ROOT / "docs/reference" / name
        assert page.read_text() == build(), f"docs/reference/{name} is stale: run `make docs`"


def test_reference_lists_every_setting_command_and_metric() -> None:
    gen = _generator()
    settings, commands, metrics = gen.settings_page(), gen.commands_page(), gen.metrics_page()
    for key in ("kafka.bootstrap", "escalation.daily_budget_usd", "review.lease_s"):
        assert f"| `{key}` |" in settings
    for command in ("modpipe worker", "modpipe escalator", "modpipe review", "modpipe plan"):
        assert f"`{command}`" in commands
    assert "| `modpipe_posts_total` | counter | `worker`, `outcome` |" in metrics


def test_readme_is_a_short_front_page_with_the_two_commands_first() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "make demo" in head and "make test" in head


def test_every_link_in_the_readme_resolves() -> None:
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path = link.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to a missing file: {link}"
