package prom_test

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool"
	"github.com/claudepool/claudepool/prom"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var (
	latencyType = reflect.TypeFor[claudepool.Latency]()
	summaryType = reflect.TypeFor[claudepool.LatencySummary]()
)

// statsLeaves returns the paths of the leaf fields of claudepool.Stats,
// in declaration order: structs are walked into (Tokens.Input), a map is
// one leaf, and so is a Latency, whose embedded LatencySummary counts
// through it.
func statsLeaves(t *testing.T) []string {
	t.Helper()
	var out []string
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			path := prefix + f.Name
			switch {
			case f.Type == latencyType:
				out = append(out, path)
			case f.Type.Kind() == reflect.Struct && hasExported(f.Type):
				walk(f.Type, path+".")
			default:
				out = append(out, path)
			}
		}
	}
	walk(reflect.TypeFor[claudepool.Stats](), "")
	return out
}

func hasExported(typ reflect.Type) bool {
	for i := range typ.NumField() {
		if typ.Field(i).IsExported() {
			return true
		}
	}
	return false
}

// TestLatencyIsOneLeaf guards statsLeaves' treatment of a Latency as one
// field: its summary and its histogram, nothing else a metric would miss.
func TestLatencyIsOneLeaf(t *testing.T) {
	var fields []string
	for i := range latencyType.NumField() {
		f := latencyType.Field(i)
		fields = append(fields, f.Name)
		if f.Name == "LatencySummary" && (!f.Anonymous || f.Type != summaryType) {
			t.Errorf("Latency.LatencySummary is not the embedded LatencySummary")
		}
	}
	if want := []string{"LatencySummary", "Histogram"}; !slices.Equal(fields, want) {
		t.Errorf("Latency has the fields %v, want %v: export the new ones and teach statsLeaves", fields, want)
	}
}

// TestEveryStatsFieldHasAMetric fails when a field of claudepool.Stats
// has no metric in prom's table, when the table names a field Stats does
// not have, or when the metric named does not change with its field.
func TestEveryStatsFieldHasAMetric(t *testing.T) {
	leaves := statsLeaves(t)
	if len(leaves) < 40 {
		t.Fatalf("found only %d fields in Stats: %v", len(leaves), leaves)
	}
	for _, path := range leaves {
		if _, ok := prom.StatsMetrics[path]; !ok {
			t.Errorf("Stats.%s has no metric: export it in prom.Collector and add it to statsMetrics", path)
		}
	}
	for path := range prom.StatsMetrics {
		if !slices.Contains(leaves, path) {
			t.Errorf("statsMetrics names Stats.%s, which is not a field of Stats", path)
		}
	}

	var zero claudepool.Stats
	base := scrape(t, zero)
	for _, path := range leaves {
		name, ok := prom.StatsMetrics[path]
		if !ok {
			continue
		}
		var st claudepool.Stats
		setNonZero(t, path, fieldByPath(reflect.ValueOf(&st).Elem(), path))
		got := scrape(t, st)
		if _, ok := base[name]; !ok {
			t.Errorf("Stats.%s: metric %s missing from the scrape", path, name)
			continue
		}
		if reflect.DeepEqual(base[name], got[name]) {
			t.Errorf("Stats.%s set, but %s did not change: %v", path, name, got[name])
		}
	}
}

// TestEveryMetricHasAField checks the other way: each family the
// Collector exports is in the table, so that the table lists them all.
func TestEveryMetricHasAField(t *testing.T) {
	named := map[string]bool{}
	for _, name := range prom.StatsMetrics {
		named[name] = true
	}
	for name := range scrape(t, claudepool.Stats{}) {
		if !named[name] {
			t.Errorf("%s exports no field of Stats according to statsMetrics", name)
		}
	}
}

// TestServerExampleHasEveryFamily checks that examples/server, which
// writes the same families by hand so as to need no dependency, names
// each of them.
func TestServerExampleHasEveryFamily(t *testing.T) {
	src, err := os.ReadFile("../examples/server/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, name := range prom.StatsMetrics {
		names[name] = true
	}
	for name := range names {
		if short := strings.TrimPrefix(name, "claudepool_"); !strings.Contains(string(src), `"`+short+`"`) {
			t.Errorf("examples/server/metrics.go does not write %s", name)
		}
	}
}

func fieldByPath(v reflect.Value, path string) reflect.Value {
	for name := range strings.SplitSeq(path, ".") {
		v = v.FieldByName(name)
	}
	return v
}

// setNonZero gives the field at path a value other than its zero value.
func setNonZero(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch {
	case v.Type() == latencyType:
		var h claudepool.Histogram
		for _, b := range claudepool.HistogramBounds() {
			h.Buckets = append(h.Buckets, claudepool.Bucket{UpperBound: b, Count: 1})
		}
		h.Count, h.Sum = 1, time.Millisecond
		v.Set(reflect.ValueOf(claudepool.Latency{
			LatencySummary: claudepool.LatencySummary{Count: 1, P50: time.Millisecond, P90: time.Millisecond,
				P99: time.Millisecond, Max: time.Millisecond},
			Histogram: h,
		}))
	case v.CanInt():
		v.SetInt(3)
	case v.CanFloat():
		v.SetFloat(2.5)
	case v.Kind() == reflect.String:
		v.SetString("spawn failed")
	case v.Kind() == reflect.Map:
		var keys []string
		switch v.Type().Key() {
		case reflect.TypeFor[claudepool.RetireReason]():
			for _, r := range claudepool.RetireReasons() {
				keys = append(keys, string(r))
			}
		case reflect.TypeFor[claudepool.Outcome]():
			for _, o := range claudepool.Outcomes() {
				keys = append(keys, string(o))
			}
		default:
			t.Fatalf("Stats.%s: no keys known for %v", path, v.Type())
		}
		m := reflect.MakeMap(v.Type())
		for _, k := range keys {
			m.SetMapIndex(reflect.ValueOf(k).Convert(v.Type().Key()), reflect.ValueOf(int64(3)).Convert(v.Type().Elem()))
		}
		v.Set(m)
	default:
		t.Fatalf("Stats.%s: cannot set a %v", path, v.Type())
	}
}

// scrape collects st and returns each family's series as text, by family
// name.
func scrape(t *testing.T, st claudepool.Stats) map[string][]string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(prom.NewCollectorOf(func() claudepool.Stats { return st }, nil))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, mf := range mfs {
		var series []string
		for _, m := range mf.GetMetric() {
			series = append(series, seriesText(m))
		}
		sort.Strings(series)
		out[mf.GetName()] = series
	}
	return out
}

func seriesText(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		fmt.Fprintf(&b, "%s=%q,", l.GetName(), l.GetValue())
	}
	switch {
	case m.Counter != nil:
		fmt.Fprintf(&b, " %v", m.GetCounter().GetValue())
	case m.Gauge != nil:
		fmt.Fprintf(&b, " %v", m.GetGauge().GetValue())
	case m.Histogram != nil:
		h := m.GetHistogram()
		fmt.Fprintf(&b, " count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
		for _, bk := range h.GetBucket() {
			fmt.Fprintf(&b, " %v:%d", bk.GetUpperBound(), bk.GetCumulativeCount())
		}
	default:
		fmt.Fprintf(&b, " %v", m)
	}
	return b.String()
}
