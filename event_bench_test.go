package claudepool

import "testing"

// BenchmarkParseTranscript parses a recorded successful turn with partial
// messages: init, status, a text delta, the assistant message and the result.
func BenchmarkParseTranscript(b *testing.B) {
	lines := readTranscript(b, "partial.jsonl")
	var size int64
	for _, line := range lines {
		size += int64(len(line))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		for _, line := range lines {
			if _, _, err := parseLine(line); err != nil {
				b.Fatal(err)
			}
		}
	}
}
