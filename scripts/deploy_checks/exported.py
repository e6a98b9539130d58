"""The metric series the worker exports, read from src/metrics.rs, and recorded scrapes to compare.

A series is a sample name with its label names, e.g. `wxcourier_jobs_total` with {app, status}:
prometheus-client adds `_total` to counters and `_bucket`/`_sum`/`_count` to histograms.
"""

import re

PREFIX = "wxcourier_"
# Labels Prometheus or its service discovery put on every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "node", "endpoint"}


class SourceError(ValueError):
    pass


# `pub`, `pub(crate)` or `pub(super)`: the Rust visibility in front of an item or field.
VIS = r"pub(?:\([\w:]+\))?"


def _label_sets(src: str) -> dict[str, set[str]]:
    """Label structs (derive EncodeLabelSet): struct name -> field names."""
    out = {}
    for m in re.finditer(r"derive\([^)]*EncodeLabelSet[^)]*\)\]\s*" + VIS + r" struct (\w+)\s*\{(.*?)\}", src, re.S):
        out[m.group(1)] = set(re.findall(VIS + r" (\w+):", m.group(2)))
    return out


def _fields(src: str) -> dict[str, str]:
    """Fields of `pub struct Metrics`: field name -> its type."""
    m = re.search(VIS + r" struct Metrics\s*\{(.*?)\n\}", src, re.S)
    if not m:
        raise SourceError("src/metrics.rs: no `pub struct Metrics { … }`")
    return {f.group(1): f.group(2).strip() for f in re.finditer(VIS + r" (\w+):\s*([^\n]+?),?\n", m.group(1) + "\n")}


def families(src: str) -> dict[str, tuple[str, set[str]]]:
    """Registered families: name (with the prefix) -> (counter|gauge|histogram, label names)."""
    labels_of = _label_sets(src)
    fields = _fields(src)
    calls = re.findall(r"\.register\(", src)
    # re.S: a help text may go on over a line break (a Rust string's `\` continuation).
    found = re.findall(r'\.register\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*m\.(\w+)\.clone\(\),?\s*\)', src, re.S)
    if len(found) != len(calls):
        raise SourceError(
            f"src/metrics.rs: read {len(found)} of its {len(calls)} register(…) calls; "
            "teach scripts/deploy_checks/exported.py the new form")
    out = {}
    for name, field in found:
        ty = fields.get(field)
        if ty is None:
            raise SourceError(f"src/metrics.rs: register({name!r}) uses m.{field}, which Metrics does not declare")
        kinds = [k for k in ("Histogram", "Counter", "Gauge") if re.search(rf"\b{k}\b", ty)]
        if not kinds:
            raise SourceError(f"src/metrics.rs: cannot tell the kind of {field}: {ty}")
        labels = set()
        family = re.match(r"Family<\s*(\w+)", ty)
        if family:
            if family.group(1) not in labels_of:
                raise SourceError(f"src/metrics.rs: label set {family.group(1)} of {field} not found")
            labels = labels_of[family.group(1)]
        out[PREFIX + name] = (kinds[0].lower(), labels)
    return out


def series(fams: dict[str, tuple[str, set[str]]]) -> dict[str, set[str]]:
    """Sample names as a query names them -> their label names."""
    out = {}
    for name, (kind, labels) in fams.items():
        if kind == "counter":
            out[name + "_total"] = set(labels)
        elif kind == "gauge":
            out[name] = set(labels)
        else:
            out[name + "_bucket"] = set(labels) | {"le"}
            out[name + "_sum"] = set(labels)
            out[name + "_count"] = set(labels)
    return out


def recorded(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """A recording by scripts/record_metrics.py: (family -> kind, sample name -> label names)."""
    fams, samples = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# family "):
            _, _, name, kind = line.split()
            fams[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([A-Za-z0-9_,]*)\})?", line)
        if not m:
            raise SourceError(f"cannot read recorded series {line!r}")
        samples.setdefault(m.group(1), set()).update(x for x in (m.group(2) or "").split(",") if x)
    return fams, samples
