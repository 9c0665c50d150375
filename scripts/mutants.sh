#!/usr/bin/env bash
# make mutants: re-applies each mutation of docs/testing.md's table, kept as
# a patch in mutants/, and checks that the tests named for it catch it.
#
#   scripts/mutants.sh            every mutants/*.patch
#   scripts/mutants.sh 04 07-...  only the patches whose names start so
#   scripts/mutants.sh --applies  only check that every patch still applies to
#                                 the work tree (seconds; make test runs it, so a
#                                 change that breaks a mutation's context is
#                                 seen at once, not sessions later)
#
# Each patch starts with header lines (git apply skips text before the diff):
#   # guarantee: what the README promises
#   # mutation:  what the patch breaks
#   # test: <package> <go test -run pattern>    (one line per catching test)
#
# The patches apply to HEAD in a temporary git worktree; the caller's work
# tree is never touched (uncommitted changes to code are not seen, new or
# edited patches in mutants/ are). For each patch: it must apply, the
# packages must still build, and every named test must fail; each named
# test must pass on HEAD first, so a test broken already kills nothing.
# Exit status 1 if any patch survived, no longer applies (regenerate it
# against the current code: apply the mutation by hand, git diff) or does
# not build.
set -euo pipefail

GO=${GO:-go}
TEST_TIMEOUT=${TEST_TIMEOUT:-10m}
repo=$(git rev-parse --show-toplevel)
cd "$repo"

if [[ ${1:-} == --applies ]]; then
	stale=0
	for p in mutants/*.patch; do
		if ! git apply --check "$p" 2>/dev/null; then
			echo "mutants: $p no longer applies; regenerate it (apply the mutation by hand, git diff) and run make mutants MUTANT=$(basename "$p" | cut -d- -f1)" >&2
			stale=1
		fi
	done
	exit $stale
fi

patches=()
if (($# == 0)); then
	patches=(mutants/*.patch)
else
	for want in "$@"; do
		match=(mutants/"$(basename "$want" .patch)"*.patch)
		if [[ ! -e ${match[0]} ]]; then
			echo "mutants: no patch in mutants/ named $want*" >&2
			exit 2
		fi
		patches+=("${match[@]}")
	done
fi
if [[ ! -e ${patches[0]} ]]; then
	echo "mutants: no patches in mutants/" >&2
	exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/segpilot-mutants.XXXXXX")
tree=$tmp/tree
cleanup() {
	git -C "$repo" worktree remove --force "$tree" 2>/dev/null || true
	rm -rf "$tmp"
	git -C "$repo" worktree prune
}
trap cleanup EXIT
git worktree add --quiet --detach "$tree" HEAD
echo "mutants: ${#patches[@]} patch(es) against HEAD $(git rev-parse --short HEAD), in $tree"

# tests_of prints a patch's "<package> <pattern>" lines.
tests_of() { sed -n 's/^# test: *//p' "$1"; }

# runs <package> <pattern> <log>: the test's exit status, its output in log.
runs() {
	(cd "$tree" && "$GO" test -count=1 -timeout "$TEST_TIMEOUT" -run "$2" "$1") </dev/null >"$3" 2>&1
}

# Every named test must pass on HEAD, once for all the patches naming it.
for p in "${patches[@]}"; do
	if [[ -z $(tests_of "$p") ]]; then
		echo "mutants: $p names no test (# test: <package> <pattern>)" >&2
		exit 2
	fi
done
while read -r pkg pattern; do
	if ! runs "$pkg" "$pattern" "$tmp/log"; then
		echo "mutants: without any mutation, go test -run '$pattern' $pkg FAILS: fix it first" >&2
		tail -n 30 "$tmp/log" >&2
		exit 1
	fi
	if grep -q 'no tests to run' "$tmp/log"; then
		echo "mutants: go test -run '$pattern' $pkg runs no test: the patch names a test that does not exist" >&2
		exit 1
	fi
done < <(for p in "${patches[@]}"; do tests_of "$p"; done | sort -u)

failed=()
for p in "${patches[@]}"; do
	name=$(basename "$p" .patch)
	git -C "$tree" reset --quiet --hard HEAD
	git -C "$tree" clean --quiet -fdx
	if ! git -C "$tree" apply "$repo/$p" 2>"$tmp/apply"; then
		printf '%-9s %s: no longer applies to HEAD; regenerate it (apply the mutation by hand, git diff)\n' STALE "$name"
		sed 's/^/    /' "$tmp/apply"
		failed+=("$name (stale)")
		continue
	fi
	# A mutant that does not compile fails every test and proves nothing.
	# go test's build (its vet subset included), not go vet's, which also
	# refuses code a mutation made unreachable.
	pkgs=$(tests_of "$p" | awk '{print $1}' | sort -u)
	# shellcheck disable=SC2086 # one word per package
	if ! (cd "$tree" && "$GO" test -count=1 -run '^$' $pkgs) >"$tmp/log" 2>&1; then
		printf '%-9s %s: the mutated code does not build, so it proves nothing\n' BROKEN "$name"
		tail -n 20 "$tmp/log" | sed 's/^/    /'
		failed+=("$name (does not build)")
		continue
	fi
	survived=()
	: >"$tmp/survivor"
	start=$SECONDS
	while read -r pkg pattern; do
		if runs "$pkg" "$pattern" "$tmp/log"; then
			survived+=("$pkg $pattern")
			echo "--- go test -run '$pattern' $pkg passed with $name applied:" >>"$tmp/survivor"
			tail -n 20 "$tmp/log" >>"$tmp/survivor"
		fi
	done < <(tests_of "$p")
	if ((${#survived[@]} == 0)); then
		printf '%-9s %s (%ds)\n' killed "$name" $((SECONDS - start))
	else
		printf '%-9s %s: not caught by %s\n' SURVIVED "$name" "${survived[*]}"
		sed 's/^/    /' "$tmp/survivor"
		failed+=("$name (survived)")
	fi
done

if ((${#failed[@]} > 0)); then
	echo "mutants: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "mutants: all ${#patches[@]} killed"
