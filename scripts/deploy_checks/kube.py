"""Kubernetes manifests against the Kubernetes schemas, and KEDA's resources against KEDA's.

Kubernetes: kubernetes-validate's bundled OpenAPI schemas, strict (an unknown field fails, as
`kubectl apply --validate=strict` would). KEDA: the pydantic models that cloudcoil-models-keda
generates from KEDA 2.16.1's CRDs, strict; a field the models do not know is reported, as the
API server would prune it.
"""

import kubernetes_validate

# Schemas kubernetes-validate ships: the oldest Kubernetes the manifests promise to work on, and
# the newest the pinned package knows.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
KEDA_GROUP = "keda.sh/"
KEDA_VERSION = "2.16.1"


def schema_errors(doc: dict, where: str) -> list[str]:
    """A core Kubernetes resource against each pinned version's schema."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{where}: no Kubernetes {version} schema for {doc.get('apiVersion')} {doc.get('kind')}")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            errors.append(f"{where}: Kubernetes {version}: {path}: {e.message}")
    return errors


def _pruned(given, kept, path: str) -> list[str]:
    """Paths present in what was given but absent from what the model kept."""
    out = []
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}.{key}")
            else:
                out += _pruned(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for n, (a, b) in enumerate(zip(given, kept)):
            out += _pruned(a, b, f"{path}[{n}]")
    return out


def keda_errors(doc: dict, where: str) -> list[str]:
    """A keda.sh resource against KEDA's own schema (its CRDs, via cloudcoil's models)."""
    import pydantic
    from cloudcoil.models.keda import v1alpha1

    if doc.get("apiVersion") != "keda.sh/v1alpha1":
        return [f"{where}: KEDA {KEDA_VERSION} has no {doc.get('apiVersion')}"]
    model = getattr(v1alpha1, str(doc.get("kind")), None)
    if model is None or not hasattr(model, "model_validate"):
        return [f"{where}: KEDA {KEDA_VERSION} has no kind {doc.get('kind')}"]
    try:
        parsed = model.model_validate(doc, strict=True)
    except pydantic.ValidationError as e:
        return [f"{where}: KEDA {KEDA_VERSION}: " + "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())]
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"{where}: KEDA {KEDA_VERSION} {doc['kind']} has no field {p[1:]}" for p in _pruned(doc, kept, "")]


def errors(doc: dict, where: str) -> list[str]:
    if str(doc.get("apiVersion", "")).startswith(KEDA_GROUP):
        return keda_errors(doc, where)
    return schema_errors(doc, where)
