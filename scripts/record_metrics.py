"""Records which series a /metrics endpoint exports (names and label names, no values).

    python3 scripts/record_metrics.py URL OUTFILE "what was scraped"

deploy/monitoring/*-metrics.txt are written this way by scripts/compose-test.sh, and
scripts/check_deploy.py holds the dashboard and the alert rules to them.
"""

import datetime
import re
import sys
import urllib.request

SAMPLE = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+\S+")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"')


def summarize(text: str) -> list[str]:
    families, samples = set(), {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families.add(f"# family {name} {kind}")
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if not m:
                raise ValueError(f"cannot read the sample line {line!r}")
            labels = sorted(set(LABEL.findall(m.group(3) or "")))
            samples[m.group(1)] = samples.get(m.group(1), set()) | set(labels)
    lines = sorted(families)
    for name in sorted(samples):
        labels = sorted(samples[name])
        lines.append(name + ("{" + ",".join(labels) + "}" if labels else ""))
    return lines


def main() -> int:
    url, out, what = sys.argv[1:4]
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    lines = summarize(text)
    if not any(not x.startswith("#") for x in lines):
        print(f"record_metrics: {url} returned no samples", file=sys.stderr)
        return 1
    today = datetime.date.today().isoformat()
    with open(out, "w") as f:
        f.write(f"# Series exported by {what}, scraped on {today} by scripts/compose-test.sh\n")
        f.write("# (scripts/record_metrics.py: names and label names only).\n")
        f.write("\n".join(lines) + "\n")
    print(f"record_metrics: {len(lines)} lines from {url} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
