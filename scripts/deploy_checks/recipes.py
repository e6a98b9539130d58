"""Rules the deploy recipes must keep beyond their schemas: shared state wherever several
workers can run, restart policies, no service links, and KEDA pointed at real app queues."""

import re
import tomllib

REDIS_URL = re.compile(r"^rediss?://")
STATE_ENV = "WXCOURIER_STATE__URL"


def _by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out = {}
    for d in docs:
        out.setdefault(d.get("kind"), []).append(d)
    return out


def _one(kinds, kind, errors):
    found = kinds.get(kind, [])
    if len(found) != 1:
        errors.append(f"kubernetes: expected one {kind}, found {len(found)}")
        return None
    return found[0]


def _secret_data(secret: dict) -> dict:
    return {**(secret.get("stringData") or {}), **(secret.get("data") or {})}


def kubernetes_errors(docs: list[dict]) -> list[str]:
    errors = []
    kinds = _by_kind(docs)
    deployment = _one(kinds, "Deployment", errors)
    secret = _one(kinds, "Secret", errors)
    configmap = _one(kinds, "ConfigMap", errors)
    if not (deployment and secret and configmap):
        return errors
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    if pod.get("enableServiceLinks") is not False:
        errors.append("Deployment: set enableServiceLinks: false (service-link variables look like WXCOURIER_ keys)")

    toml = tomllib.loads(configmap["data"]["wxcourier.toml"])
    apps = sorted(toml.get("apps", {}))
    scaled = [s for s in kinds.get("ScaledObject", []) if s["spec"]["scaleTargetRef"]["name"] == name]
    most = max([deployment["spec"].get("replicas", 1)] + [s["spec"].get("maxReplicaCount", 100) for s in scaled])
    if most > 1:
        # More than one replica: the state must be Redis, from the Secret the pods load.
        state = toml.get("state", {}).get("url")
        if state is not None and not REDIS_URL.match(state):
            errors.append(f"ConfigMap: state.url = {state!r} with up to {most} replicas; use Redis")
        secrets = {ref["secretRef"]["name"] for c in pod["containers"] for ref in c.get("envFrom", []) if "secretRef" in ref}
        if secret["metadata"]["name"] not in secrets:
            errors.append(f"Deployment: the containers do not load Secret {secret['metadata']['name']} (envFrom)")
        url = _secret_data(secret).get(STATE_ENV)
        if url is None or not REDIS_URL.match(url):
            errors.append(f"Secret: {STATE_ENV} must be a redis:// or rediss:// URL: the Deployment runs up to {most} replicas")

    trigger_auths = {t["metadata"]["name"]: t for t in kinds.get("TriggerAuthentication", [])}
    for s in kinds.get("ScaledObject", []):
        if s["spec"]["scaleTargetRef"]["name"] != name:
            errors.append(f"ScaledObject {s['metadata']['name']}: scaleTargetRef names no Deployment here")
        if s["spec"].get("minReplicaCount", 0) < 1:
            errors.append(f"ScaledObject {s['metadata']['name']}: minReplicaCount below 1 stops every worker")
        queues = set()
        for t in s["spec"]["triggers"]:
            if t["type"] != "rabbitmq":
                continue
            queue = t.get("metadata", {}).get("queueName", "")
            queues.add(queue)
            if queue not in {f"wxcourier.jobs.{a}" for a in apps}:
                errors.append(f"ScaledObject: queueName {queue!r} is no app queue (apps: {', '.join(apps)})")
            auth = t.get("authenticationRef", {}).get("name")
            if auth not in trigger_auths:
                errors.append(f"ScaledObject: authenticationRef {auth!r} is no TriggerAuthentication here")
                continue
            for ref in trigger_auths[auth]["spec"].get("secretTargetRef", []):
                if ref["name"] != secret["metadata"]["name"] or ref["key"] not in _secret_data(secret):
                    errors.append(f"TriggerAuthentication {auth}: {ref['name']}/{ref['key']} is not in the Secret")
        for app in apps:
            if f"wxcourier.jobs.{app}" not in queues:
                errors.append(f"ScaledObject: no trigger for app {app}'s queue wxcourier.jobs.{app}")
    return errors


def compose_errors(compose: dict) -> list[str]:
    errors = []
    services = compose.get("services", {})
    for name, svc in services.items():
        if svc.get("restart") not in ("always", "unless-stopped", "on-failure"):
            errors.append(f"compose: service {name} has no restart policy")
    worker = services.get("worker")
    if worker is None:
        return errors + ["compose: no worker service"]
    env = worker.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    if env.get(STATE_ENV) != "redis://redis:6379":
        errors.append(f"compose: the worker needs {STATE_ENV}: redis://redis:6379 (got {env.get(STATE_ENV)!r})")
    if "redis" not in (worker.get("depends_on") or {}):
        errors.append("compose: the worker must depend on redis")
    return errors


def systemd_errors(unit_text: str) -> list[str]:
    if STATE_ENV not in unit_text:
        return [f"wxcourier.service: say that {STATE_ENV} (Redis) is needed once a second VM runs the worker"]
    return []
