package claudepool

import (
	"encoding/json"
	"math/bits"
	"sync/atomic"
	"time"
)

// histogram is a fixed-bucket latency histogram safe for concurrent use
// without a lock. Buckets are log-linear: every power of two of
// nanoseconds is split into histSub equal buckets, so a recorded value is
// reported within 1/histSub (12.5%) of its true value. Recording is a few
// atomic adds; it sits on the acquire path.
type histogram struct {
	count   atomic.Int64
	max     atomic.Int64
	buckets [histBuckets]atomic.Int64
}

const (
	histSubBits = 3
	histSub     = 1 << histSubBits
	// 64 powers of two of histSub buckets each cover every int64.
	histBuckets = 64 * histSub
)

// bucketOf maps a duration in nanoseconds to its bucket.
func bucketOf(ns int64) int {
	if ns < histSub {
		if ns < 0 {
			return 0
		}
		return int(ns)
	}
	e := bits.Len64(uint64(ns)) // ns in [2^(e-1), 2^e)
	shift := e - 1 - histSubBits
	sub := int(ns>>shift) & (histSub - 1)
	return (e-histSubBits)*histSub + sub
}

// bucketBounds returns the smallest and largest value that map to bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	e := i/histSub + histSubBits
	sub := int64(i % histSub)
	shift := e - 1 - histSubBits
	lo = (histSub + sub) << shift
	hi = lo + (int64(1) << shift) - 1
	return lo, hi
}

func (h *histogram) record(d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	h.buckets[bucketOf(ns)].Add(1)
	h.count.Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// summary computes percentiles from a snapshot of the buckets. A
// percentile is reported as the midpoint of its bucket, capped by the
// exact maximum.
func (h *histogram) summary() LatencySummary {
	var counts [histBuckets]int64
	var total int64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Load()
		total += counts[i]
	}
	s := LatencySummary{Count: total, Max: time.Duration(h.max.Load())}
	if total == 0 {
		return s
	}
	pct := func(p float64) time.Duration {
		rank := int64(p*float64(total) + 0.5)
		if rank < 1 {
			rank = 1
		}
		var seen int64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				lo, hi := bucketBounds(i)
				v := time.Duration(lo + (hi-lo)/2)
				if v > s.Max {
					v = s.Max
				}
				return v
			}
		}
		return s.Max
	}
	s.P50, s.P90, s.P99 = pct(0.50), pct(0.90), pct(0.99)
	return s
}

// LatencySummary summarizes recorded durations. Percentiles come from a
// fixed-bucket histogram and are accurate to within 12.5%; Max is exact.
// The zero value means nothing was recorded.
type LatencySummary struct {
	Count int64         // durations recorded
	P50   time.Duration // median
	P90   time.Duration // 90th percentile
	P99   time.Duration // 99th percentile
	Max   time.Duration // largest recorded, exact
}

// MarshalJSON encodes the durations as milliseconds (floating point), the
// unit dashboards expect, under the keys count, p50_ms, p90_ms, p99_ms
// and max_ms.
func (s LatencySummary) MarshalJSON() ([]byte, error) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return json.Marshal(struct {
		Count int64   `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{s.Count, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max)})
}

// CountSummary summarizes recorded counts, from the same histogram as
// LatencySummary: percentiles within 12.5%, Max exact.
type CountSummary struct {
	Count int64 `json:"count"` // values recorded
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	Max   int64 `json:"max"`
}

// counts summarizes a histogram whose values are counts rather than
// durations.
func (h *histogram) counts() CountSummary {
	s := h.summary()
	return CountSummary{Count: s.Count, P50: int64(s.P50), P90: int64(s.P90), P99: int64(s.P99), Max: int64(s.Max)}
}
