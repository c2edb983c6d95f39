"""The escalator's manifest: its paid provider's key is required, so a missing secret
stops the pod at start instead of sending every escalation quietly to review."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_escalators_api_key_is_not_optional() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "escalator.yaml").read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {
        e["name"]: e
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
    }
    ref = env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref.get("optional", False) is False
