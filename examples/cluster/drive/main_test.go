package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// After a kill, a conversation's turn that leaves the killed replica is
// counted as moved, whether it was in flight at the kill or sent after it;
// the others split at the kill.
func TestRecoverySplitsTurns(t *testing.T) {
	at := time.Unix(100, 0)
	before, after := at.Add(-time.Second), at.Add(time.Second)
	results := []turn{
		// Conversation 1 on r2: turn 3 in flight at the kill, moved to r1.
		{conv: 1, n: 1, replica: "r2", sent: before.Add(-3 * time.Second)},
		{conv: 1, n: 2, replica: "r2", continued: true, sent: before.Add(-2 * time.Second)},
		{conv: 1, n: 3, replica: "r1", sent: at.Add(-time.Millisecond)},
		{conv: 1, n: 4, replica: "r1", continued: true, sent: after},
		// Conversation 2 on r2: its next turn is sent after the kill.
		{conv: 2, n: 1, replica: "r2", sent: before},
		{conv: 2, n: 2, replica: "r3", sent: after},
		{conv: 2, n: 3, replica: "r3", continued: true, sent: after.Add(time.Second)},
		// Conversation 3 on r1 throughout, one miss after the kill.
		{conv: 3, n: 1, replica: "r1", sent: before},
		{conv: 3, n: 2, replica: "r1", continued: true, sent: before},
		{conv: 3, n: 3, replica: "r1", sent: after},
	}
	d := &driver{o: options{turns: 5}}
	got := d.recovery(results, "r2", at)
	require.Equal(t, [3]string{"2/2", "0/2", "2/3"}, got)
}

func TestQuantileAndPct(t *testing.T) {
	require.Equal(t, "-", quantile(nil, 0.5))
	ls := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	require.Equal(t, "2ms", quantile(ls, 0.5))
	require.Equal(t, "3ms", quantile(ls, 0.9))
	require.Equal(t, "-", pct(1, 0))
	require.Equal(t, "95.0%", pct(19, 20))
}
