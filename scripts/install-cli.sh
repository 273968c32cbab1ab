#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into the project-local folder .cli/
# and prints the path of its executable. Quick when that exact version is
# already installed.
set -euo pipefail

VERSION="2.1.330"
PACKAGE="@anthropic-ai/claude-code"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${root}/.cli"
bin="${prefix}/node_modules/.bin/claude"

installed_version() {
	[ -x "$bin" ] || return 1
	# Prints e.g. "2.1.330 (Claude Code)".
	"$bin" --version 2>/dev/null | awk '{print $1; exit}'
}

if [ "$(installed_version || true)" = "$VERSION" ]; then
	echo "$bin"
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	echo "install-cli: npm not found; install Node.js and npm (e.g. apt-get install -y nodejs npm)" >&2
	exit 1
fi

mkdir -p "$prefix"
# npm warns EBADENGINE (the package asks for a newer Node.js than Debian's);
# the install still completes. Its chatter goes to stderr so stdout stays the path.
npm install --no-audit --no-fund --prefix "$prefix" "${PACKAGE}@${VERSION}" >&2

got="$(installed_version || true)"
if [ "$got" != "$VERSION" ]; then
	echo "install-cli: expected ${PACKAGE} ${VERSION}, got '${got}' at ${bin}" >&2
	exit 1
fi
echo "$bin"
