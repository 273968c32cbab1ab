#!/bin/sh
# Installs the pinned official OpenAI TypeScript SDK (openai) into
# node_modules/ beside this script, from package-lock.json, with npm ci.
# Quick when that exact version is already installed there.
# openai_sdk_test.go runs it before the SDK test.
#
#   sh examples/server/openaisdk/install.sh
set -eu

dir="$(cd "$(dirname "$0")" && pwd)"
want="$(sed -n 's/.*"openai": "\([^"]*\)".*/\1/p' "$dir/package.json" | head -n 1)"

# installed_version prints the installed SDK's version, or nothing.
installed_version() {
	f="$dir/node_modules/openai/package.json"
	if [ -f "$f" ]; then
		sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$f" | head -n 1
	fi
}

if [ "$(installed_version)" = "$want" ]; then
	exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
	echo "install-openai-sdk: npm not found; install Node.js and npm (e.g. apt-get install -y nodejs npm)" >&2
	exit 1
fi
cd "$dir"
npm ci --no-audit --no-fund >&2
got="$(installed_version)"
if [ "$got" != "$want" ]; then
	echo "install-openai-sdk: expected openai $want in $dir/node_modules, found '$got'" >&2
	exit 1
fi
