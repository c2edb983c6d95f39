"""Schema checks of deploy/ (run by `make lint` and by tests/ops/test_manifests.py).

kustomize's build is reproduced for what deploy/kustomization.yaml uses (resources, a
namespace, labels); anything else in it is an error here, so a feature this check does
not understand cannot slip through unvalidated. Built-in kinds are validated by
kubernetes-validate (strict: unknown fields are errors), KEDA ScaledObjects by the CRD
schema kept in deploy/schemas (strict likewise). Then cross-checks against modpipe's own
settings: every MODPIPE_* variable is a setting, ScaledObjects scale existing
Deployments on the groups and topics the workers use, up to the partition count.

    python -m tests.ops.manifests        # exit 1 with one line per problem
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import ValidationError as KubeValidationError

from modpipe.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.33.0"
KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources"}
SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json"}
CLUSTER_SCOPED = {"Namespace"}


def build(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize directory` renders (for the features used here)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_KEYS
    if unknown:
        raise ValueError(
            f"kustomization.yaml uses {sorted(unknown)}, which this check cannot build"
        )
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            doc["metadata"].setdefault("labels", {}).update(labels)
            if doc["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
                doc["metadata"]["namespace"] = kustomization["namespace"]
            doc["_file"] = name
            docs.append(doc)
    return docs


def _strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever it lists the known ones."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Schema violations of one resource (empty when it is valid)."""
    body = {k: v for k, v in doc.items() if k != "_file"}
    where = f"{doc['_file']}: {doc['kind']}/{doc['metadata'].get('name')}"
    custom = SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if custom is not None:
        schema = _strict(json.loads((DEPLOY / "schemas" / custom).read_text()))
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{where}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in validator.iter_errors(body)
        ]
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except KubeValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError:
        return [f"{where}: no schema for {doc['apiVersion']} {doc['kind']}"]
    return []


def settings_from(config: dict[str, str]) -> Settings:
    """The settings a worker with this ConfigMap as its environment would load."""
    saved = dict(os.environ)
    try:
        os.environ.update(config)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def consistency_problems(docs: list[dict[str, Any]]) -> list[str]:
    """What the schemas cannot see: manifests that disagree with each other or with modpipe."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    problems = []
    config = by_kind["ConfigMap"]["modpipe-config"]["data"]
    settings = settings_from(config)
    expected = {
        "triage": (settings.app_id, settings.topics.posts, settings.metrics.port),
        "escalator": (
            settings.escalation.group_id,
            settings.topics.escalations,
            settings.metrics.escalator_port,
        ),
    }
    for name, (group, topic, port) in expected.items():
        scaled = by_kind["ScaledObject"].get(name)
        deployment = by_kind["Deployment"].get(name)
        if scaled is None or deployment is None:
            problems.append(f"{name}: needs both a Deployment and a ScaledObject")
            continue
        spec = scaled["spec"]
        trigger = spec["triggers"][0]["metadata"]
        if spec["scaleTargetRef"]["name"] != name:
            problems.append(f"ScaledObject/{name} scales {spec['scaleTargetRef']['name']}")
        if (trigger["consumerGroup"], trigger["topic"]) != (group, topic):
            problems.append(
                f"ScaledObject/{name} watches {trigger}, the worker uses {group} {topic}"
            )
        if trigger["bootstrapServers"] != settings.kafka.bootstrap:
            problems.append(f"ScaledObject/{name} asks {trigger['bootstrapServers']}")
        if spec["maxReplicaCount"] != settings.kafka.partitions:
            problems.append(
                f"ScaledObject/{name} maxReplicaCount {spec['maxReplicaCount']} is not the "
                f"partition count {settings.kafka.partitions}"
            )
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        if container["ports"][0]["containerPort"] != port:
            problems.append(
                f"Deployment/{name} exposes {container['ports']}, metrics are on {port}"
            )
        if pod["terminationGracePeriodSeconds"] <= 30:
            problems.append(f"Deployment/{name}: grace period must exceed the 30 s stop budget")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in container:
                problems.append(f"Deployment/{name} has no {probe}")
        if name not in by_kind["PodDisruptionBudget"]:
            problems.append(f"{name}: no PodDisruptionBudget")
    if settings.redis.cache_url is None or settings.redis.cache_url == settings.redis.url:
        problems.append("the verdict cache must have its own Redis (MODPIPE_REDIS__CACHE_URL)")
    policies = {}
    for name in ("redis-state", "redis-cache"):
        kind = "StatefulSet" if name == "redis-state" else "Deployment"
        args = by_kind[kind][name]["spec"]["template"]["spec"]["containers"][0]["args"]
        policies[name] = args[args.index("--maxmemory-policy") + 1]
    if policies != {"redis-state": "noeviction", "redis-cache": "allkeys-lru"}:
        problems.append(f"Redis eviction policies are {policies}")
    return problems


def problems(directory: Path = DEPLOY) -> list[str]:
    """Every problem found in `directory`'s manifests."""
    docs = build(directory)
    found = [p for doc in docs for p in schema_problems(doc)]
    return found + consistency_problems(docs)


def main() -> int:
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    print(f"deploy/: {len(build())} resources, {len(found)} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
