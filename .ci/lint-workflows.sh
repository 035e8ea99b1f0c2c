#!/usr/bin/env bash
# Validates the GitHub Actions workflows (.github/workflows/*.yml) with actionlint, a Go
# program fetched as a Go module and built by `go run` (cached by Go after the first run).
# actionlint also runs shellcheck over every `run:` script when shellcheck is on PATH.
# Without a Go toolchain it falls back to a YAML syntax check and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v go > /dev/null 2>&1; then
  command -v shellcheck > /dev/null 2>&1 || echo "lint-workflows: shellcheck not found; run: scripts are not checked"
  go run github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
  workflows=(.github/workflows/*.yml)
  echo "lint-workflows: actionlint found no problems in ${#workflows[@]} workflows"
else
  echo "lint-workflows: no Go toolchain, so no actionlint: checking YAML syntax only"
  # shellcheck disable=SC2016 # JavaScript template literal
  node -e '
    const fs = require("fs"), yaml = require("js-yaml")
    for (const f of process.argv.slice(1)) { yaml.load(fs.readFileSync(f, "utf8")); console.log(`${f}: YAML ok`) }
  ' .github/workflows/*.yml
fi
