package claudepool

import "testing"

// BenchmarkParseTranscript parses a recorded successful turn with partial
// messages: init, status, a text delta, the assistant message and the result.
func BenchmarkParseTranscript(b *testing.B) {
	lines := readEventTranscript(b, "partial.jsonl")
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

// BenchmarkParseLine parses single lines of each kind; a reply streamed with
// partial messages is mostly text deltas.
func BenchmarkParseLine(b *testing.B) {
	lines := readEventTranscript(b, "partial.jsonl")
	for _, bc := range []struct {
		name string
		line []byte
	}{
		{"Kind=init", lines[0]},
		{"Kind=status", lines[1]},
		{"Kind=delta", lines[2]},
		{"Kind=assistant", lines[3]},
		{"Kind=result", lines[4]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.line)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := parseLine(bc.line); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
