#!/usr/bin/env bash
# make test's first step: the checks against a second emulator and the
# deployment tools must run, so a missing tool fails make test here,
# naming how to install it, instead of its tests skipping unseen.
set -euo pipefail
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have cfn-lint || missing+=("cfn-lint: pip install cfn-lint")
have moto_server || missing+=("moto_server: pip install 'moto[server]'")
python3 -c 'import samtranslator' >/dev/null 2>&1 || missing+=("python3 with the AWS SAM translator: pip install aws-sam-translator")
# The Lambda runtime interface emulator: on PATH or where go install puts it.
if ! have aws-lambda-rie; then
  gobin="$( (go env GOPATH 2>/dev/null || true) | cut -d: -f1)/bin"
  [ -x "$gobin/aws-lambda-rie" ] || missing+=("aws-lambda-rie: go install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d")
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf 'make test: a required tool is missing, so its tests would not run:\n' >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
