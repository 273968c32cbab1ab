package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/claudepool/claudepool/internal/fakecli"
)

// Like the real CLI, the fake starts the stdio MCP servers of
// --mcp-config with the process, before it reads its input: each one's
// command, with its args and env, in the fake's process group. It does not
// speak MCP with them (they get no tools); they run until killed. Each is
// recorded as <pid>.args in EnvRecordDir, like a grandchild.
func init() {
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if name != "--mcp-config" {
			continue
		}
		values := []string{value}
		if !hasValue {
			values = nil
			for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				values = append(values, args[i])
			}
		}
		for _, v := range values {
			startStdioServers(v)
		}
	}
}

// startStdioServers starts the stdio servers of one --mcp-config value
// given as JSON text; a file path is left to the SDK servers' reading.
func startStdioServers(value string) {
	var cfg struct {
		MCPServers map[string]struct {
			Type    string            `json:"type"`
			Command string            `json:"command"`
			Args    []string          `json:"args"`
			Env     map[string]string `json:"env"`
		} `json:"mcpServers"`
	}
	if !strings.HasPrefix(strings.TrimSpace(value), "{") || json.Unmarshal([]byte(value), &cfg) != nil {
		return
	}
	for name, srv := range cfg.MCPServers {
		if srv.Command == "" || (srv.Type != "" && srv.Type != "stdio") {
			continue
		}
		cmd := exec.Command(srv.Command, srv.Args...)
		cmd.Env = os.Environ()
		for k, v := range srv.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "fakeclaude: MCP server %s: %v\n", name, err)
			continue
		}
		if dir := os.Getenv(fakecli.EnvRecordDir); dir != "" {
			path := fmt.Sprintf("%s/%d.args", dir, cmd.Process.Pid)
			_ = os.WriteFile(path, []byte(strings.Join(cmd.Args, "\n")+"\n"), 0o644)
		}
		_ = cmd.Process.Release()
	}
}
