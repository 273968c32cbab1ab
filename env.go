package claudepool

import "strings"

// The child environment is an allowlist: a backend's own secrets
// (DATABASE_URL, signing keys, anything not listed here) never reach the
// CLI or the tools it may run. Config.Env adds to it and wins over it.
var (
	// envNames are passed through by exact name.
	envNames = map[string]bool{
		"PATH": true, "HOME": true, "USER": true, "LOGNAME": true,
		"SHELL": true, "LANG": true, "TZ": true, "TMPDIR": true, "TERM": true,

		// Proxies and certificate authorities.
		"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
		"http_proxy": true, "https_proxy": true, "no_proxy": true, "all_proxy": true,
		"NODE_EXTRA_CA_CERTS": true, "SSL_CERT_FILE": true, "SSL_CERT_DIR": true,

		// CLI settings that do not carry the CLAUDE_CODE_ prefix.
		"CLAUDE_CONFIG_DIR": true, "API_TIMEOUT_MS": true,
		"CLAUDE_STREAM_IDLE_TIMEOUT_MS": true, "MAX_THINKING_TOKENS": true,
		"DISABLE_AUTOUPDATER": true, "DISABLE_TELEMETRY": true,
		"DISABLE_ERROR_REPORTING": true,

		// Google Vertex AI credentials.
		"GOOGLE_APPLICATION_CREDENTIALS": true, "GOOGLE_CLOUD_PROJECT": true,
		"GCLOUD_PROJECT": true, "CLOUD_ML_REGION": true,
	}

	// envPrefixes are passed through by prefix.
	envPrefixes = []string{
		"LC_", "XDG_", "ANTHROPIC_", "CLAUDE_CODE_",
		"AWS_",           // Amazon Bedrock credentials and region
		"VERTEX_REGION_", // per-model Vertex regions
	}

	// envBlocked are never passed through, even when a prefix matches:
	// they mark the parent as a Claude Code session, and a child that
	// inherits them behaves as a nested session.
	envBlocked = map[string]bool{
		"CLAUDECODE":                true,
		"CLAUDE_CODE_SESSION_ID":    true,
		"CLAUDE_CODE_CHILD_SESSION": true,
		"CLAUDE_CODE_ENTRYPOINT":    true,
	}
)

// allowedEnv reports whether the parent variable name may reach the child.
func allowedEnv(name string) bool {
	if envBlocked[name] {
		return false
	}
	if envNames[name] {
		return true
	}
	for _, p := range envPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// childEnv builds the child's environment from the parent's (filtered
// through the allowlist) and extra (KEY=VALUE, unfiltered, later entries
// win). The result has one entry per name.
func childEnv(parent, extra []string) []string {
	out := make([]string, 0, len(extra)+16)
	index := make(map[string]int, len(extra)+16)
	add := func(kv string) {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			return
		}
		if i, seen := index[name]; seen {
			out[i] = kv
			return
		}
		index[name] = len(out)
		out = append(out, kv)
	}
	for _, kv := range parent {
		if name, _, ok := strings.Cut(kv, "="); ok && allowedEnv(name) {
			add(kv)
		}
	}
	for _, kv := range extra {
		add(kv)
	}
	return out
}
