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
	sum     atomic.Int64 // nanoseconds
	buckets [histBuckets]atomic.Int64
	// coarse counts the same values in the buckets of HistogramBounds,
	// exactly, plus one for the values above the last bound.
	coarse [len(histogramBounds) + 1]atomic.Int64
}

// histogramBounds are the upper bounds of the buckets Stats exports (see
// Histogram).
var histogramBounds = [...]time.Duration{
	10 * time.Microsecond, 100 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second, 30 * time.Second, time.Minute,
	2 * time.Minute, 5 * time.Minute,
}

// HistogramBounds returns the upper bounds of the buckets of every
// Histogram, in increasing order: 10µs, 100µs, 1ms, 2.5ms, 5ms, 10ms,
// 25ms, 50ms, 100ms, 250ms, 500ms, 1s, 2.5s, 5s, 10s, 30s, 1m, 2m and 5m.
// They cover a warm acquire (microseconds), a warm chat's first event
// (tens of milliseconds), a cold start-up (about a second) and a reply
// bounded by the CLI's retries (minutes), and stay the same for every
// histogram and every pool, as Prometheus needs to aggregate them.
func HistogramBounds() []time.Duration { return append([]time.Duration(nil), histogramBounds[:]...) }

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
	i := 0
	for i < len(histogramBounds) && time.Duration(ns) > histogramBounds[i] {
		i++
	}
	h.coarse[i].Add(1)
	h.sum.Add(ns)
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

// Histogram is a snapshot of one latency histogram in the form Prometheus
// and OpenTelemetry histograms take: cumulative counts over the fixed
// bounds of HistogramBounds, the number of values and their sum. Each
// value is counted exactly in the first bucket whose bound it does not
// exceed; the 12.5% approximation of LatencySummary does not apply here.
// The zero value means nothing was recorded.
type Histogram struct {
	// Buckets are cumulative: Buckets[i].Count values were at most
	// Buckets[i].UpperBound. Every bound of HistogramBounds is listed,
	// also when its count is 0; values above the last bound are counted
	// in Count only (the +Inf bucket).
	Buckets []Bucket
	// Count is the number of values recorded.
	Count int64
	// Sum is the sum of the values recorded.
	Sum time.Duration
}

// Bucket is one cumulative bucket of a Histogram.
type Bucket struct {
	UpperBound time.Duration // inclusive
	Count      int64         // values at most UpperBound
}

// snapshot reads the coarse buckets. Count is their total, so that the
// buckets and Count agree even while values are being recorded; Sum may
// lag or lead them by a value recorded meanwhile.
func (h *histogram) snapshot() Histogram {
	out := Histogram{Buckets: make([]Bucket, len(histogramBounds)), Sum: time.Duration(h.sum.Load())}
	var cum int64
	for i, b := range histogramBounds {
		cum += h.coarse[i].Load()
		out.Buckets[i] = Bucket{UpperBound: b, Count: cum}
	}
	out.Count = cum + h.coarse[len(histogramBounds)].Load()
	return out
}
