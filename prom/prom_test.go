package prom_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

// fakeCLI is the root module's fake claude (testdata/fakeclaude), built
// by TestMain: internal/fakecli cannot be imported from this module.
var fakeCLI string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "claudepool-prom-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakeCLI = filepath.Join(dir, "claude")
	cmd := exec.Command("go", "build", "-o", fakeCLI, "./testdata/fakeclaude")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the fake CLI: %v: %s\n", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// newPool returns a pool of fake CLIs, closed at cleanup.
func newPool(t *testing.T) *claudepool.Pool {
	t.Helper()
	pool, err := claudepool.NewPool(claudepool.Config{Command: fakeCLI, Size: 1, MaxProcs: 2,
		StopGrace: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := pool.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return pool
}

// chat runs one chat to its end.
func chat(t *testing.T, ctx context.Context, pool *claudepool.Pool, text string) {
	t.Helper()
	s, err := claudepool.NewAdapter(pool).StreamChat(ctx, claudepool.Request{
		Messages: []claudepool.Message{{Role: claudepool.RoleUser, Content: text}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for s.Next() {
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestCollector(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pool := newPool(t)
	if err := pool.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	chat(t, ctx, pool, "hello")

	c := prom.NewCollector(pool, prometheus.Labels{"pool": "test"})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]dto.MetricType{}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
	}
	want := map[string]dto.MetricType{
		"claudepool_acquires_total":              dto.MetricType_COUNTER,
		"claudepool_outcomes_total":              dto.MetricType_COUNTER,
		"claudepool_spawn_failures_total":        dto.MetricType_COUNTER,
		"claudepool_reuses_total":                dto.MetricType_COUNTER,
		"claudepool_retired_total":               dto.MetricType_COUNTER,
		"claudepool_tokens_total":                dto.MetricType_COUNTER,
		"claudepool_cost_usd_total":              dto.MetricType_COUNTER,
		"claudepool_overloaded_total":            dto.MetricType_COUNTER,
		"claudepool_waiting_callers":             dto.MetricType_GAUGE,
		"claudepool_processes":                   dto.MetricType_GAUGE,
		"claudepool_live_processes":              dto.MetricType_GAUGE,
		"claudepool_consecutive_auth_failures":   dto.MetricType_GAUGE,
		"claudepool_consecutive_spawn_failures":  dto.MetricType_GAUGE,
		"claudepool_acquire_duration_seconds":    dto.MetricType_HISTOGRAM,
		"claudepool_spawn_to_ready_seconds":      dto.MetricType_HISTOGRAM,
		"claudepool_first_event_seconds":         dto.MetricType_HISTOGRAM,
		"claudepool_first_text_seconds":          dto.MetricType_HISTOGRAM,
		"claudepool_result_seconds":              dto.MetricType_HISTOGRAM,
		"claudepool_reset_duration_seconds":      dto.MetricType_HISTOGRAM,
		"claudepool_api_first_byte_seconds":      dto.MetricType_HISTOGRAM,
		"claudepool_first_text_overhead_seconds": dto.MetricType_HISTOGRAM,
		"claudepool_conversations_total":         dto.MetricType_COUNTER,
		"claudepool_holds_ended_total":           dto.MetricType_COUNTER,
		"claudepool_uses_per_process":            dto.MetricType_GAUGE,
		"claudepool_spawn_failing":               dto.MetricType_GAUGE,
	}
	// Every metric the table names for a field of Stats is in the scrape.
	for path, name := range prom.StatsMetrics {
		if _, ok := types[name]; !ok {
			t.Errorf("Stats.%s: family %s missing from the scrape", path, name)
		}
	}
	for name, typ := range want {
		got, ok := types[name]
		if !ok {
			t.Errorf("family %s missing", name)
		} else if got != typ {
			t.Errorf("family %s is a %v, want a %v", name, got, typ)
		}
	}
	for name := range types {
		if !strings.HasPrefix(name, "claudepool_") {
			t.Errorf("family %s lacks the claudepool_ prefix", name)
		}
	}

	// The one chat: a warm acquire, an ok outcome, and its histograms.
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP claudepool_acquires_total Processes acquired for requests, by kind: warm (ready in the pool) or cold (spawned for the request).
# TYPE claudepool_acquires_total counter
claudepool_acquires_total{kind="cold",pool="test"} 0
claudepool_acquires_total{kind="warm",pool="test"} 1
`), "claudepool_acquires_total")
	if err != nil {
		t.Error(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch {
			case mf.GetName() == "claudepool_outcomes_total" && labels["kind"] == "ok":
				if v := m.GetCounter().GetValue(); v != 1 {
					t.Errorf("ok outcomes: %v, want 1", v)
				}
			case mf.GetName() == "claudepool_tokens_total" && labels["type"] == "input":
				if v := m.GetCounter().GetValue(); v <= 0 {
					t.Errorf("input tokens: %v, want > 0", v)
				}
			case mf.GetName() == "claudepool_result_seconds" && labels["kind"] == "warm":
				h := m.GetHistogram()
				if h.GetSampleCount() != 1 || h.GetSampleSum() <= 0 {
					t.Errorf("warm result histogram: count %d, sum %v", h.GetSampleCount(), h.GetSampleSum())
				}
				if n := len(h.GetBucket()); n != len(claudepool.HistogramBounds()) {
					t.Errorf("warm result histogram has %d buckets, want %d", n, len(claudepool.HistogramBounds()))
				}
				if !slices.IsSortedFunc(h.GetBucket(), func(a, b *dto.Bucket) int {
					return int(a.GetCumulativeCount()) - int(b.GetCumulativeCount())
				}) {
					t.Error("buckets are not cumulative")
				}
			case mf.GetName() == "claudepool_api_first_byte_seconds" ||
				mf.GetName() == "claudepool_first_text_overhead_seconds":
				// The fake CLI makes no API call: no chat went through the
				// gateway.
				if n := m.GetHistogram().GetSampleCount(); n != 0 {
					t.Errorf("%s%v: count %d, want 0", mf.GetName(), labels, n)
				}
			}
		}
	}
	if n := testutil.CollectAndCount(c, "claudepool_processes"); n != 4 {
		t.Errorf("claudepool_processes has %d series, want 4", n)
	}
}

// histogramOf is the claudepool.Histogram of the durations ds, as
// claudepool records them.
func histogramOf(ds ...time.Duration) claudepool.Histogram {
	var h claudepool.Histogram
	for _, b := range claudepool.HistogramBounds() {
		var n int64
		for _, d := range ds {
			if d <= b {
				n++
			}
		}
		h.Buckets = append(h.Buckets, claudepool.Bucket{UpperBound: b, Count: n})
	}
	for _, d := range ds {
		h.Count++
		h.Sum += d
	}
	return h
}

// TestGatewayLatencies exports known histograms of the API's time to first
// byte and of the overhead, warm and cold, and checks the series of
// claudepool_api_first_byte_seconds and
// claudepool_first_text_overhead_seconds.
func TestGatewayLatencies(t *testing.T) {
	const ms = time.Millisecond
	var st claudepool.Stats
	st.Warm.APIFirstByte.Histogram = histogramOf(500*ms, 240*ms, 20*ms)
	st.Warm.Overhead.Histogram = histogramOf(100*ms, 60*ms)
	st.Cold.APIFirstByte.Histogram = histogramOf(500*ms, 600*ms)
	st.Cold.Overhead.Histogram = histogramOf(800 * ms)
	c := prom.NewCollectorOf(func() claudepool.Stats { return st }, prometheus.Labels{"pool": "test"})
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		count   uint64
		sum     float64
		buckets map[float64]uint64 // by upper bound in seconds: some of them
	}
	wants := map[string]want{
		"claudepool_api_first_byte_seconds warm": {3, 0.76,
			map[float64]uint64{0.01: 0, 0.025: 1, 0.1: 1, 0.25: 2, 0.5: 3, 300: 3}},
		"claudepool_api_first_byte_seconds cold": {2, 1.1,
			map[float64]uint64{0.25: 0, 0.5: 1, 1: 2}},
		"claudepool_first_text_overhead_seconds warm": {2, 0.16,
			map[float64]uint64{0.05: 0, 0.1: 2}},
		"claudepool_first_text_overhead_seconds cold": {1, 0.8,
			map[float64]uint64{0.5: 0, 1: 1}},
	}
	seen := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			key := mf.GetName() + " " + labels["kind"]
			w, ok := wants[key]
			if !ok {
				continue
			}
			seen++
			if labels["pool"] != "test" {
				t.Errorf("%s: labels %v, want pool=test", key, labels)
			}
			h := m.GetHistogram()
			if h.GetSampleCount() != w.count || math.Abs(h.GetSampleSum()-w.sum) > 1e-9 {
				t.Errorf("%s: count %d, sum %v; want %d, %v", key, h.GetSampleCount(), h.GetSampleSum(), w.count, w.sum)
			}
			if n := len(h.GetBucket()); n != len(claudepool.HistogramBounds()) {
				t.Errorf("%s: %d buckets, want %d", key, n, len(claudepool.HistogramBounds()))
			}
			for _, b := range h.GetBucket() {
				if n, ok := w.buckets[b.GetUpperBound()]; ok && b.GetCumulativeCount() != n {
					t.Errorf("%s: bucket le=%v has %d, want %d", key, b.GetUpperBound(), b.GetCumulativeCount(), n)
				}
			}
		}
	}
	if seen != len(wants) {
		t.Errorf("found %d of the %d series", seen, len(wants))
	}
}
