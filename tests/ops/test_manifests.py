"""deploy/ validates (as in `make lint`), and the check catches what it claims to."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.ops.manifests import DEPLOY, build, problems


def test_shipped_manifests_have_no_problems() -> None:
    kinds = sorted(d["kind"] for d in build())
    assert kinds.count("ScaledObject") == 2 and kinds.count("PodDisruptionBudget") == 3
    assert problems() == []


def copy_with(tmp_path: Path, file: str, edit) -> Path:
    target = tmp_path / "deploy"
    shutil.copytree(DEPLOY, target)
    docs = list(yaml.safe_load_all((target / file).read_text()))
    edit(docs)
    (target / file).write_text(yaml.safe_dump_all(docs))
    return target


def test_a_misspelt_field_in_a_deployment_is_caught(tmp_path: Path) -> None:
    def typo(docs: list) -> None:
        docs[0]["spec"]["template"]["spec"]["terminationGracePeriod"] = 45

    found = problems(copy_with(tmp_path, "triage.yaml", typo))
    assert any("terminationGracePeriod" in p for p in found), found


def test_a_scaledobject_past_the_partition_count_is_caught(tmp_path: Path) -> None:
    def more(docs: list) -> None:
        docs[1]["spec"]["maxReplicaCount"] = 48
        docs[1]["spec"]["triggers"][0]["metadata"]["lagTreshold"] = 5  # not a string either

    found = problems(copy_with(tmp_path, "scaledobjects.yaml", more))
    assert any("maxReplicaCount 48 is not the partition count 42" in p for p in found), found
    assert any("lagTreshold" in p for p in found), found


def test_one_redis_for_cache_and_state_is_caught(tmp_path: Path) -> None:
    def shared(docs: list) -> None:
        docs[0]["data"]["MODPIPE_REDIS__CACHE_URL"] = docs[0]["data"]["MODPIPE_REDIS__URL"]

    found = problems(copy_with(tmp_path, "config.yaml", shared))
    assert any("its own Redis" in p for p in found), found
