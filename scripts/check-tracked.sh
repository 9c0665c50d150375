#!/usr/bin/env bash
# Fails when git tracks a compiled binary (ELF or Mach-O) or a file over
# MAX_BYTES (default 1 MiB): build output belongs in build/, and a large
# file, once committed, stays in every clone's history. Sizes are those of
# the staged blobs (what a commit would hold); the magic bytes are read
# from the work tree.
set -euo pipefail

MAX_BYTES=${MAX_BYTES:-1048576}
cd "$(git rev-parse --show-toplevel)"

bad=0
# "<size> <path>" for every tracked file but submodules (commits, not blobs).
while read -r size path; do
	if ((size > MAX_BYTES)); then
		echo "check-tracked: $path is $size bytes, over $MAX_BYTES: keep it out of git (git rm --cached '$path')" >&2
		bad=1
	fi
	[[ -f $path && ! -L $path ]] || continue
	case $(od -An -tx1 -N4 "$path" | tr -d ' \n') in
	7f454c46) kind=ELF ;;
	# thin 32/64-bit in either byte order, and cafebabe: a universal binary
	# (or a Java class, which has no place here either)
	feedface | cefaedfe | feedfacf | cffaedfe | cafebabe) kind=Mach-O ;;
	*) continue ;;
	esac
	echo "check-tracked: $path is an $kind binary: build output belongs in build/ (git rm --cached '$path')" >&2
	bad=1
done < <(git -c core.quotePath=false ls-files --format='%(objectmode) %(objectname) %(path)' |
	awk '$1 != "160000" { sub(/^[^ ]* /, ""); print }' |
	git cat-file --batch-check='%(objectsize) %(rest)')
if ((bad)); then
	echo "check-tracked: FAILED" >&2
fi
exit "$bad"
