"""Every deployment file at least parses: YAML documents, TOML, and the systemd unit's sections."""

import configparser
import pathlib
import sys
import tomllib

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
failures = 0
checked = 0
for path in sorted((root / "deploy").rglob("*.yaml")) + sorted((root / "deploy").rglob("*.yml")):
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, "no document"
        for d in docs:
            assert isinstance(d, dict), "a document is not a mapping"
        checked += 1
    except Exception as e:  # report every broken file, not just the first
        print(f"FAIL {path.relative_to(root)}: {e}")
        failures += 1
for path in [root / "config" / "default.toml"]:
    tomllib.loads(path.read_text())
    checked += 1
for doc in yaml.safe_load_all((root / "deploy/kubernetes/configmap.yaml").read_text()):
    tomllib.loads(doc["data"]["wxcourier.toml"])
    checked += 1
unit = configparser.ConfigParser(strict=False, interpolation=None)
unit.read(root / "deploy" / "wxcourier.service")
if not {"Unit", "Service", "Install"} <= set(unit.sections()):
    print("FAIL deploy/wxcourier.service: missing sections")
    failures += 1
checked += 1
print(f"{checked - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
