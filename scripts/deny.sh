#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml): licenses, bans and sources, then
# advisories against the live RustSec database when GitHub answers, or else against the offline
# snapshot in shared/advisory-db beside the repository, saying which was used and how old the
# snapshot is. An advisory fails the run either way; so does having neither database.
# Installs cargo-deny from crates.io when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny (once per machine)…"
    cargo install --locked cargo-deny@0.20.2
fi

cargo deny --log-level error check licenses bans sources

RUSTSEC=https://github.com/RustSec/advisory-db
db_root=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
# The folder cargo-deny uses for the default RustSec URL (deny.toml sets no db-path).
db=$db_root/advisory-db-3157b0e258782691

# shared/ sits beside the repository: beside this clone, or, from a git worktree, beside the
# main checkout. ADVISORY_SNAPSHOT names any other folder holding SNAPSHOT and install.sh.
find_snapshot() {
    local top common dir
    top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
    common=$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo "$top/.git")
    for dir in "${ADVISORY_SNAPSHOT:-}" "$top/../shared/advisory-db" \
        "$(dirname "$common")/../shared/advisory-db"; do
        if [ -n "$dir" ] && [ -f "$dir/SNAPSHOT" ] && [ -f "$dir/install.sh" ]; then
            (cd "$dir" && pwd)
            return 0
        fi
    done
    return 1
}

if GIT_TERMINAL_PROMPT=0 timeout 30 git ls-remote "$RUSTSEC" HEAD >/dev/null 2>&1; then
    # A snapshot installed here has no remote to update from, so cargo-deny could not fetch
    # into it: make way for a clone of the live database.
    if [ -f "$db/.snapshot" ]; then
        rm -rf "$db"
    fi
    echo "cargo deny: advisories: checking against the live RustSec database ($RUSTSEC)"
    if ! cargo deny check advisories; then
        echo "cargo deny: advisories FAILED (live RustSec database)"
        exit 1
    fi
    echo "cargo deny: advisories ok (live RustSec database)"
    exit 0
fi

if ! snapshot=$(find_snapshot); then
    echo "cargo deny: advisories NOT checked: GitHub is unreachable and no RustSec snapshot was" \
        "found (looked for shared/advisory-db beside the repository; ADVISORY_SNAPSHOT names" \
        "another folder)" >&2
    exit 1
fi
read -r commit date <"$snapshot/SNAPSHOT"
age_days=$((($(date +%s) - $(date -d "$date" +%s)) / 86400))
bash "$snapshot/install.sh" "$db_root" >/dev/null
echo "cargo deny: advisories: GitHub is unreachable; checking against the offline RustSec" \
    "snapshot of $date ($age_days days old, commit ${commit:0:12}, from $snapshot)"
# cargo-deny judges a database's age by when it was written here, not by its date: the age
# above is the one that counts. An old snapshot is a floor, not a guarantee.
if [ "$age_days" -gt 90 ]; then
    echo "cargo deny: warning: the snapshot is over 90 days old; refresh shared/advisory-db"
fi
# --offline also keeps cargo from the network, so every crate of the lock file (those for other
# platforms too) must already be here.
cargo fetch --quiet || echo "cargo deny: cargo fetch failed; going on with the crates already here"
if ! cargo deny --offline check advisories; then
    echo "cargo deny: advisories FAILED (snapshot of $date)"
    exit 1
fi
echo "cargo deny: advisories ok (snapshot of $date)"
