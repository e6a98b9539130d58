"""The metric series the worker exports, as its own registry lists them, and recorded scrapes to compare.

`wxcourier metrics-list` (a verb hidden from --help) prints one family per line: name, type,
labels (comma separated) and help, separated by tabs. A series is a sample name with its label
names, e.g. `wxcourier_jobs_total` with {app, status}: prometheus-client adds `_total` to
counters and `_bucket`/`_sum`/`_count` to histograms.
"""

import os
import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFIX = "wxcourier_"
KINDS = {"counter", "gauge", "histogram"}
# Labels Prometheus or its service discovery put on every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "node", "endpoint"}


class SourceError(ValueError):
    pass


def listing() -> str:
    """What `wxcourier metrics-list` prints: of the binary in $DEPLOY_CHECK_BINARY when set,
    else of the crate here, built by cargo if it is not up to date."""
    binary = os.environ.get("DEPLOY_CHECK_BINARY")
    # Resolved from where the checks were started: the command runs in the crate's root.
    command = ([str(pathlib.Path(binary).resolve())] if binary else ["cargo", "run", "--quiet", "--bin", "wxcourier", "--"]) + ["metrics-list"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError as e:
        raise SourceError(f"cannot run {' '.join(command)}: {e}") from e
    if done.returncode != 0:
        raise SourceError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def families(listed: str) -> dict[str, tuple[str, set[str]]]:
    """Families of a `metrics-list` output: name (with the prefix) -> (counter|gauge|histogram, label names)."""
    out = {}
    for n, line in enumerate(listed.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise SourceError(f"metrics-list line {n}: not name, type, labels and help: {line!r}")
        name, kind, labels, _help = fields
        if not name.startswith(PREFIX) or kind not in KINDS:
            raise SourceError(f"metrics-list line {n}: {name!r} of type {kind!r} is not a wxcourier family")
        out[name] = (kind, {label for label in labels.split(",") if label})
    if not out:
        raise SourceError("metrics-list printed no family")
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
