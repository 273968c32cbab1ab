package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestOptionsDefaultsFitGracePeriod(t *testing.T) {
	o, err := parseOptions(nil, noEnv, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "localhost:8080", o.addr)
	require.Empty(t, o.admin, "the admin listener is off by default")
	require.Equal(t, 2, o.size)
	require.Equal(t, 8, o.maxProcs)
	require.Equal(t, 15*time.Second, o.heartbeat)
	// Kubernetes' default terminationGracePeriodSeconds is 30.
	require.Less(t, o.readyDelay+o.drain+o.closeTimeout, 30*time.Second)
	require.Equal(t, 10*time.Second, o.readHeaderTimeout)
	require.Equal(t, 30*time.Second, o.readTimeout)
	require.Equal(t, 2*time.Minute, o.idleTimeout)
	require.Equal(t, 64<<10, o.maxHeaderBytes)
	require.EqualValues(t, 32<<20, o.maxBody, "the API's own limit: images and PDFs come in the body")
	limit, known := openFileLimit()
	require.Equal(t, defaultMaxConns(limit, known, o.maxProcs), o.maxConns)
}

func TestOptionsListenerLimits(t *testing.T) {
	env := envOf(map[string]string{
		"CLAUDEPOOL_READ_HEADER_TIMEOUT": "2s", "CLAUDEPOOL_READ_TIMEOUT": "5s", "CLAUDEPOOL_IDLE_TIMEOUT": "1m",
		"CLAUDEPOOL_MAX_HEADER_BYTES": "8192", "CLAUDEPOOL_MAX_CONNS": "100", "CLAUDEPOOL_MAX_BODY": "1048576",
	})
	o, err := parseOptions(nil, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, o.readHeaderTimeout)
	require.Equal(t, 5*time.Second, o.readTimeout)
	require.Equal(t, time.Minute, o.idleTimeout)
	require.Equal(t, 8192, o.maxHeaderBytes)
	require.Equal(t, 100, o.maxConns)
	require.EqualValues(t, 1<<20, o.maxBody)
	o, err = parseOptions([]string{"-read-timeout", "1s", "-max-conns", "7"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, time.Second, o.readTimeout)
	require.Equal(t, 7, o.maxConns)

	for _, args := range [][]string{
		{"-read-timeout", "0"}, {"-read-header-timeout", "-1s"}, {"-idle-timeout", "0"},
		{"-max-header-bytes", "0"}, {"-max-conns", "-1"}, {"-max-body", "0"},
	} {
		_, err := parseOptions(args, noEnv, io.Discard)
		require.Error(t, err, "%v", args)
	}
}

// TestDefaultMaxConns: the default leaves the pool's processes their file
// descriptors.
func TestDefaultMaxConns(t *testing.T) {
	for _, tt := range []struct {
		limit    uint64
		known    bool
		maxProcs int
		want     int
	}{
		{1024, true, 8, 1024 - 64 - 10*8},
		{160, true, 8, 16}, // the limit that starved spawns of pipes: the floor
		{100, true, 8, 16},
		{1 << 20, true, 8, 1024},
		{^uint64(0), true, 8, 1024}, // RLIM_INFINITY
		{1200, true, 64, 1200 - 64 - 10*64},
		{0, false, 8, 256},
	} {
		require.Equal(t, tt.want, defaultMaxConns(tt.limit, tt.known, tt.maxProcs), "%+v", tt)
	}
}

func TestOptionsFromEnvironment(t *testing.T) {
	env := envOf(map[string]string{
		"CLAUDEPOOL_ADDR": ":9000", "CLAUDEPOOL_SIZE": "3", "CLAUDEPOOL_MOCK": "true",
		"CLAUDEPOOL_DRAIN": "10s", "CLAUDEPOOL_ADMIN_ADDR": "127.0.0.1:6060", "CLAUDEPOOL_CLI": "/opt/claude",
		"CLAUDEPOOL_SPARE_DECAY": "1m", "CLAUDEPOOL_MAX_WAIT": "3s", "CLAUDEPOOL_CHECK_API": "1",
	})
	o, err := parseOptions(nil, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, ":9000", o.addr)
	require.Equal(t, 3, o.size)
	require.Equal(t, 12, o.maxProcs, "4 × size")
	require.True(t, o.mock)
	require.Equal(t, 10*time.Second, o.drain)
	require.Equal(t, "127.0.0.1:6060", o.admin)
	require.Equal(t, "/opt/claude", o.cli)
	require.Equal(t, time.Minute, o.spareDecay)
	require.Equal(t, 3*time.Second, o.maxWait)
	require.Equal(t, 12, o.maxWaiting, "as many as max-procs")
	require.True(t, o.checkAPI)

	// A flag on the command line wins over the environment.
	o, err = parseOptions([]string{"-size", "5", "-addr", ":9001"}, env, io.Discard)
	require.NoError(t, err)
	require.Equal(t, 5, o.size)
	require.Equal(t, ":9001", o.addr)
	require.Equal(t, 10*time.Second, o.drain, "the rest still from the environment")

	_, err = parseOptions(nil, envOf(map[string]string{"CLAUDEPOOL_SIZE": "many"}), io.Discard)
	require.ErrorContains(t, err, "$CLAUDEPOOL_SIZE")
	_, err = parseOptions([]string{"-size", "4", "-max-procs", "2"}, noEnv, io.Discard)
	require.ErrorContains(t, err, "below -size")
	_, err = parseOptions([]string{"extra"}, noEnv, io.Discard)
	require.Error(t, err)
}

// TestRunListenersAndDrain runs the whole server: expvar and pprof answer
// on the admin listener only; on shutdown /readyz turns 503 while the
// listener still serves, a chat in flight is cut when the drain runs out,
// and run returns with the pool closed.
func TestRunListenersAndDrain(t *testing.T) {
	o, err := parseOptions([]string{"-addr", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-size", "1",
		"-cli", fakeCLI, "-ready-delay", "0", "-drain", "100ms"}, noEnv, io.Discard)
	require.NoError(t, err)
	type addrs struct{ public, admin string }
	started := make(chan addrs, 1)
	o.started = func(_ *server, public, admin string) { started <- addrs{public, admin} }
	drained, release := make(chan struct{}), make(chan struct{})
	o.onDrain = func() {
		close(drained)
		<-release
	}
	logs := &syncBuffer{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- run(ctx, o, slog.New(slog.NewTextHandler(logs, nil))) }()

	var a addrs
	select {
	case a = <-started:
	case err := <-runErr:
		t.Fatalf("run: %v", err)
	case <-time.After(testWait):
		t.Fatal("server not started")
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	public, admin := "http://"+a.public, "http://"+a.admin
	for _, path := range []string{"/debug/vars", "/debug/pprof/", "/debug/pprof/cmdline", "/stats"} {
		code, _ := get(public + path)
		require.Equal(t, http.StatusNotFound, code, "public %s", path)
	}
	code, body := get(admin + "/debug/vars")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"cmdline": [`)
	require.Contains(t, body, `"memstats": {`)
	require.Contains(t, body, `"claudepool": {"idle":`)
	code, _ = get(admin + "/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	code, _ = get(admin + "/metrics")
	require.Equal(t, http.StatusOK, code)
	code, body = get(admin + "/stats")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `"idle":`)
	code, body = get(public + "/readyz")
	require.Equal(t, http.StatusOK, code, body)

	// A chat in flight, stuck in the middle of its reply.
	cctx, ccancel := context.WithCancel(context.Background())
	defer ccancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodPost, public+"/chat",
		strings.NewReader(chatBody("x "+fakecli.Marker(fakecli.ModeHangMid))))
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	ev, ok := readEvent(sc)
	require.True(t, ok)
	require.Equal(t, "delta", ev.name)

	stop() // SIGTERM
	select {
	case <-drained:
	case <-time.After(testWait):
		t.Fatal("drain not started")
	}
	code, body = get(public + "/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "draining\n", body)
	code, _ = get(public + "/healthz")
	require.Equal(t, http.StatusOK, code, "alive while draining")
	close(release)

	select {
	case err := <-runErr:
		require.NoError(t, err)
	case <-time.After(testWait):
		t.Fatal("run did not return")
	}
	// The drain ran out: the chat was cut, and its stream ended.
	for ok {
		_, ok = readEvent(sc)
	}
	require.Contains(t, logs.String(), "drain deadline passed")
	require.Contains(t, logs.String(), `msg="pool closed" live=0`)
}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
