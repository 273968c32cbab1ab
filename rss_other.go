//go:build !linux

package claudepool

// processRSS returns 0: only Linux exposes a process's resident memory
// without cgo (/proc), so Config.MaxRSS has no effect elsewhere.
func processRSS(int) int64 { return 0 }

// processMemory returns zeros: see processRSS.
func processMemory(int) memUsage { return memUsage{} }
