#!/usr/bin/env bash
# govulncheck against a pinned snapshot of the Go vulnerability database,
# fetched through the Go module proxy, so it works without vuln.go.dev.
# The snapshot is turned into a govulncheck database once per version, in
# ${XDG_CACHE_HOME:-$HOME/.cache}/segpilot/. Exits with govulncheck's status:
# 3 when a vulnerability reaches the code, 0 when none does.
#   VULNDB          a database URL to use instead, e.g. https://vuln.go.dev
#   VULNDB_VERSION  the golang.org/x/vulndb version to build from
# Usage: scripts/vulncheck.sh [govulncheck flags and patterns]   (default ./...)
set -euo pipefail
cd "$(dirname "$0")/.."
govulncheck=golang.org/x/vuln/cmd/govulncheck@v1.9.0
snapshot=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/segpilot
[ $# -gt 0 ] || set -- ./...

db=${VULNDB:-}
if [ -n "$db" ]; then
  echo "vulncheck: database $db" >&2
else
  dir=$cache/vulndb-$snapshot
  if [ ! -f "$dir/index/db.json" ]; then
    mkdir -p "$cache"
    # Build beside the final place and rename, so an interrupted build is
    # never mistaken for a finished one.
    tmp=$(mktemp -d "$dir.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    go mod download -json "golang.org/x/vulndb@$snapshot" | go run ./internal/tools/vulndb -out "$tmp" >&2
    mv -T "$tmp" "$dir" 2>/dev/null || [ -f "$dir/index/db.json" ] # lost a race: use the winner's
  fi
  modified=$(sed -n 's/.*"modified":"\([^"]*\)".*/\1/p' "$dir/index/db.json")
  echo "vulncheck: database golang.org/x/vulndb@$snapshot (snapshot $modified) in $dir" >&2
  db=file://$dir
fi
# Installed rather than run with go run, which would turn govulncheck's exit
# status 3 into 1.
bin=$cache/${govulncheck##*/}
GOBIN=$bin go install "$govulncheck"
exec "$bin/govulncheck" -db "$db" "$@"
