//go:build unix

package claudepool

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// spawnFlagConfig is one way to start the CLI in BenchmarkE2ESpawnFlags.
type spawnFlagConfig struct {
	name string
	cfg  Config // UserSettings, Args and Env only
	home string // its own HOME, empty
}

// spawnFlagConfigs are the steps from what the library did before the
// lean defaults to the defaults: the user's settings and no knobs; the
// lean environment only; that plus no settings sources and strict MCP
// config; and the default, which adds --bare.
func spawnFlagConfigs() []*spawnFlagConfig {
	return []*spawnFlagConfig{
		{name: "user-settings", cfg: Config{UserSettings: true}},
		{name: "env-only", cfg: Config{UserSettings: true, Env: leanEnv}},
		{name: "sources+mcp", cfg: Config{UserSettings: true, Env: leanEnv,
			Args: []string{"--setting-sources", "", "--strict-mcp-config"}}},
		{name: "lean", cfg: Config{}},
	}
}

// BenchmarkE2ESpawnFlags measures what the lean spawn flags and
// environment save on the real CLI, against a mock API that answers at
// once. For each configuration of spawnFlagConfigs, one op (a round)
// measures, in a rotating order of the configurations:
//
//   - ready: a warm process's spawn to readiness (Stats.SpawnToReady of a
//     pool of Size 1), its answer to the pool's first control request;
//   - warm first event: a chat on that process, a second after it became
//     ready, from the start of StreamChat to its first event;
//   - cold first event: a chat on a pool of Size 0, which spawns the
//     process for it, from the start of StreamChat to its first event.
//
// Every pool has MaxUses 1 and MaxProcs 1 (no reuse, no spare started
// during a chat) and is closed after its chat, so that one CLI at a time
// runs. The mock's own Env sets DISABLE_TELEMETRY and its kin; they are
// taken out, so that each configuration has exactly the lean environment
// it names. Metrics, medians in ms: CONFIG-ready-p50-ms,
// CONFIG-cold-first-event-p50-ms, CONFIG-warm-first-event-p50-ms; and a
// table on stderr. Each round starts two CLIs per configuration, about
// two CPU-seconds each: use a small -benchtime Nx.
func BenchmarkE2ESpawnFlags(b *testing.B) {
	e := newE2E(b, claudepooltest.Config{FirstByteDelay: 0})
	configs := spawnFlagConfigs()
	for _, c := range configs {
		c.home = b.TempDir()
	}
	ready := make(map[string][]time.Duration)
	cold := make(map[string][]time.Duration)
	warm := make(map[string][]time.Duration)

	b.ResetTimer()
	for round := range b.N {
		for i := range configs {
			c := configs[(round+i)%len(configs)]
			r, w := spawnFlagsWarm(b, e, c)
			ready[c.name] = append(ready[c.name], r)
			warm[c.name] = append(warm[c.name], w)
			cold[c.name] = append(cold[c.name], spawnFlagsCold(b, e, c))
		}
	}
	b.StopTimer()

	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "config\tready p50\tcold first event p50\twarm first event p50\t\n")
	for _, c := range configs {
		r, cf, wf := quantile(ready[c.name], 0.5), quantile(cold[c.name], 0.5), quantile(warm[c.name], 0.5)
		b.ReportMetric(ms(r), c.name+"-ready-p50-ms")
		b.ReportMetric(ms(cf), c.name+"-cold-first-event-p50-ms")
		b.ReportMetric(ms(wf), c.name+"-warm-first-event-p50-ms")
		fmt.Fprintf(tw, "%s\t%v\t%v\t%v\t\n", c.name, r.Round(time.Millisecond), cf.Round(time.Millisecond), wf.Round(time.Millisecond))
	}
	_ = tw.Flush()
	fmt.Fprintf(os.Stderr, "E2ESpawnFlags, real CLI, mock API answering at once, %d rounds, medians:\n%s", b.N, table.String())
}

// spawnFlagsPool starts a pool of the real CLI with c's flags and
// environment, and the rest of cfg.
func spawnFlagsPool(b *testing.B, e *e2eEnv, c *spawnFlagConfig, cfg Config) *Pool {
	b.Helper()
	cfg.Command, cfg.Dir = e.cli, e.dir
	cfg.MaxUses, cfg.MaxProcs = 1, 1
	cfg.UserSettings, cfg.Args = c.cfg.UserSettings, c.cfg.Args
	for _, kv := range e.mock.Env() {
		if !slices.ContainsFunc(leanEnv, func(lean string) bool {
			name, _, _ := strings.Cut(lean, "=")
			return strings.HasPrefix(kv, name+"=")
		}) {
			cfg.Env = append(cfg.Env, kv)
		}
	}
	cfg.Env = append(append(cfg.Env, "HOME="+c.home), c.cfg.Env...)
	p, err := NewPool(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// closeFlagsPool closes p, which reaps every process it started.
func closeFlagsPool(b *testing.B, p *Pool) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// spawnFlagsChat runs one chat on p and returns its time to first event.
func spawnFlagsChat(b *testing.B, ctx context.Context, p *Pool, wantWarm bool) time.Duration {
	b.Helper()
	c := runBenchChat(ctx, NewAdapter(p), "hello", "")
	if c.err != nil {
		b.Fatal(c.err)
	}
	if c.acq.Warm != wantWarm || c.acq.Reused {
		b.Fatalf("chat acquired as %+v, want warm %v, not reused", c.acq, wantWarm)
	}
	return c.lat.FirstEvent
}

// spawnFlagsWarm measures a warm process's readiness and its first chat's
// first event.
func spawnFlagsWarm(b *testing.B, e *e2eEnv, c *spawnFlagConfig) (ready, firstEvent time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := spawnFlagsPool(b, e, c, Config{Size: 1})
	defer closeFlagsPool(b, p)
	if err := p.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	// One sample: Max is exact, where the percentiles are bucketed.
	ready = p.Stats().SpawnToReady.Max
	// A spare waits for its chat a while; the CLI's work after its
	// first answer is not the chat's.
	time.Sleep(time.Second)
	return ready, spawnFlagsChat(b, ctx, p, true)
}

// spawnFlagsCold measures a cold chat's first event.
func spawnFlagsCold(b *testing.B, e *e2eEnv, c *spawnFlagConfig) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := spawnFlagsPool(b, e, c, Config{})
	defer closeFlagsPool(b, p)
	return spawnFlagsChat(b, ctx, p, false)
}
