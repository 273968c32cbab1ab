package claudepool

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claudepool/claudepool/internal/fakecli"
	"github.com/stretchr/testify/require"
)

// fakeCLI is the path of the fake claude executable, built once.
var fakeCLI string

func TestMain(m *testing.M) { fakecli.Main(m, &fakeCLI) }

// testWait bounds every wait of a test on a signal.
const testWait = 20 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}

// fakePool starts a pool of fake CLIs. The fake records its argv and stdin
// under the returned directory. The pool is closed at cleanup, and every
// process it ever started must be gone by then.
type fakePool struct {
	*Pool
	rec  string
	logs *logRecorder
}

func newFakePool(t *testing.T, cfg Config, env ...string) *fakePool {
	t.Helper()
	rec := t.TempDir()
	logs := newLogRecorder()
	if cfg.Command == "" {
		cfg.Command = fakeCLI
	}
	if cfg.StopGrace == 0 {
		cfg.StopGrace = 200 * time.Millisecond
	}
	if cfg.SpawnBackoff == 0 {
		cfg.SpawnBackoff = 10 * time.Millisecond
	}
	if cfg.HoldConversations == 0 {
		// Reset every process right after its chat, so that tests of
		// reuse see the reset; tests of held conversations set it.
		cfg.HoldConversations = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(logs)
	}
	cfg.Env = append(append([]string{fakecli.EnvRecordDir + "=" + rec}, env...), cfg.Env...)
	p, err := NewPool(cfg)
	require.NoError(t, err)
	fp := &fakePool{Pool: p, rec: rec, logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		_ = p.Close(ctx)
		requireGone(t, fp.pids())
		require.Zero(t, p.Stats().Live, "processes still tracked after Close")
	})
	return fp
}

// pids lists every process the fake recorded (one <pid>.args file each),
// grandchildren included.
func (fp *fakePool) pids() []int {
	entries, _ := os.ReadDir(fp.rec)
	var pids []int
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".args"); ok {
			if pid, err := strconv.Atoi(name); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// stdin returns the lines process pid received on stdin.
func (fp *fakePool) stdin(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fp.rec, strconv.Itoa(pid)+".jsonl"))
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// alive reports whether a process with this PID exists (a zombie counts).
func alive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// requireGone fails unless every process in pids has exited. Processes
// the pool started are reaped before Close returns; their grandchildren
// are reparented, so their exit is awaited through a pidfd, which becomes
// readable when the process exits.
func requireGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if !waitExited(pid, 5*time.Second) {
			t.Errorf("process %d is still running", pid)
		}
	}
}

// waitExited waits until process pid has exited, at most timeout.
func waitExited(pid int, timeout time.Duration) bool {
	const sysPidfdOpen = 434 // same number on every Linux architecture
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		return errno == syscall.ESRCH
	}
	defer syscall.Close(int(fd))
	var set syscall.FdSet
	set.Bits[fd/64] |= 1 << (fd % 64)
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	for {
		n, err := syscall.Select(int(fd)+1, &set, nil, nil, &tv)
		if err == syscall.EINTR {
			continue
		}
		return err == nil && n == 1
	}
}

// logRecorder is a slog.Handler that keeps every record and signals each
// one, so tests wait on log events instead of sleeping.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	notify  chan struct{}
}

func newLogRecorder() *logRecorder {
	return &logRecorder{notify: make(chan struct{})}
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	close(l.notify)
	l.notify = make(chan struct{})
	return nil
}

// waitFor waits until n records with message msg exist and returns them.
func (l *logRecorder) waitFor(t *testing.T, msg string, n int) []slog.Record {
	t.Helper()
	timeout := time.NewTimer(testWait)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		var got []slog.Record
		for _, r := range l.records {
			if r.Message == msg {
				got = append(got, r)
			}
		}
		notify := l.notify
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-notify:
		case <-timeout.C:
			t.Fatalf("waited %v for %d log records %q, got %d", testWait, n, msg, len(got))
		}
	}
}

// attr returns the value of a record's attribute.
func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(entries)
}

// requireErrorIs is require.ErrorIs with the error text in the message.
func requireErrorIs(t *testing.T, err, target error) {
	t.Helper()
	require.Error(t, err)
	require.Truef(t, errors.Is(err, target), "error %q does not wrap %q", err, target)
}

// procTable reads every process from /proc, as a reset does (readProcs).
// Processes that vanish meanwhile are skipped.
func procTable(tb testing.TB) []procEntry {
	tb.Helper()
	procs, ok := readProcs()
	require.True(tb, ok, "no /proc to read")
	return procs
}
