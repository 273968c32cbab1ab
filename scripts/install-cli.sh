#!/bin/sh
# Installs the pinned Claude Code CLI with npm into a project-local folder
# (default: .cli/ at the repository root, or the folder given as the first
# argument) and prints the path of its executable. Quick when that exact
# version is already installed there.
#
#   sh scripts/install-cli.sh [PREFIX]
#
# CLI_VERSION overrides the pinned version (the Makefile passes the same one).
set -eu

VERSION="${CLI_VERSION:-2.1.330}"
PACKAGE="@anthropic-ai/claude-code"

root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="${1:-$root/.cli}"
bin="$prefix/node_modules/.bin/claude"

# installed_version prints the version of the installed CLI, e.g. 2.1.330
# (the CLI prints "2.1.330 (Claude Code)"), or nothing.
installed_version() {
	if [ -x "$bin" ]; then
		"$bin" --version 2>/dev/null | awk '{print $1; exit}' || true
	fi
}

if [ "$(installed_version)" = "$VERSION" ]; then
	echo "$bin"
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	echo "install-cli: npm not found; install Node.js and npm (e.g. apt-get install -y nodejs npm)" >&2
	exit 1
fi

mkdir -p "$prefix"
# npm warns EBADENGINE (the package asks for a newer Node.js than Debian's)
# and about install scripts; the install still completes. Its output goes to
# stderr so that stdout is only the path.
npm install --no-audit --no-fund --prefix "$prefix" "$PACKAGE@$VERSION" >&2

got="$(installed_version)"
if [ "$got" != "$VERSION" ]; then
	echo "install-cli: expected $PACKAGE $VERSION at $bin, found '$got'" >&2
	exit 1
fi
echo "$bin"
