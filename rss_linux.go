package claudepool

import (
	"bytes"
	"os"
	"strconv"
)

// processRSS returns the resident memory of process pid in bytes (VmRSS
// in /proc/PID/status), or 0 when it cannot be read.
func processRSS(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest) // "123456 kB"
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(string(f[0]), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}

// processMemory reads what process pid costs from /proc/PID/smaps_rollup:
// its resident memory (Rss), its proportional share (Pss) and its private
// memory (Private_Dirty: the pages it wrote, which no other process
// shares; pages of a file that only it maps count as Private_Clean, and
// the CLI executable's do while no other process maps it). Zero fields
// when it cannot be read.
func processMemory(pid int) memUsage {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return memUsage{rss: processRSS(pid)}
	}
	var m memUsage
	for line := range bytes.Lines(data) {
		name, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "123456 kB"
		if len(f) < 1 {
			continue
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		switch string(name) {
		case "Rss":
			m.rss = kb << 10
		case "Pss":
			m.pss = kb << 10
		case "Private_Dirty":
			m.private = kb << 10
		}
	}
	return m
}
