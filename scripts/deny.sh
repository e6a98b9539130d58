#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml): licenses, bans and sources always;
# advisories whenever the RustSec database can be fetched from GitHub. Installs cargo-deny
# from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny (once per machine)…"
    cargo install --locked cargo-deny@0.20.2
fi

cargo deny --log-level error check licenses bans sources

# A network that cannot reach GitHub must not hide a finding, only skip the lookup: any other
# failure (an advisory, a yanked crate) fails the run.
set +e
out=$(cargo deny check advisories 2>&1)
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    if grep -q "failed to fetch advisory database" <<<"$out"; then
        echo "cargo deny: advisories NOT checked: the RustSec database on GitHub is unreachable"
    else
        echo "$out"
        exit "$rc"
    fi
else
    echo "cargo deny: advisories ok"
fi
