#!/usr/bin/env bash
# make test's first step: the tools some tests need (a second emulator,
# the deployment checks, the Lambda emulator, a browser). In CI (CI=true,
# which .ci/run sets) a missing one fails make test here, naming how to
# install it, so no check goes unrun unseen. On a developer's machine it
# warns loudly instead, and those tests skip with a WARNING: make test
# still works on a fresh clone.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have cfn-lint || missing+=("cfn-lint: pip install cfn-lint")
have moto_server || missing+=("moto_server: pip install 'moto[server]'")
python3 -c 'import samtranslator' >/dev/null 2>&1 || missing+=("python3 with the AWS SAM translator: pip install aws-sam-translator")
have node || missing+=("node: Node.js 20 (the third-party client check and asl-validator)")
have chromium || missing+=("chromium: apt-get install chromium (the run pages' browser test)")
# The Lambda runtime interface emulator: on PATH or where go install puts it.
if ! have aws-lambda-rie; then
  gobin="$( (go env GOPATH 2>/dev/null || true) | cut -d: -f1)/bin"
  [ -x "$gobin/aws-lambda-rie" ] || missing+=("aws-lambda-rie: go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
case "${CI:-}" in
  true|TRUE|True|1)
    printf 'make test: a required tool is missing, so its tests would not run:\n' >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1 ;;
esac
printf '\nWARNING: these tools are missing, so their tests will SKIP (with CI=true they fail):\n' >&2
printf '  %s\n' "${missing[@]}" >&2
printf '\n' >&2
