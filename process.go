package claudepool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// stderrTailBytes bounds how much of a process's stderr is kept.
const stderrTailBytes = 16 << 10

// procSettings are what every process of a pool shares. A Process gets
// them at spawn instead of a reference to its pool.
type procSettings struct {
	stopGrace    time.Duration
	readyTimeout time.Duration
	maxLine      int
	log          *slog.Logger
	ids          atomic.Uint64 // numbers control requests
	malformed    atomic.Int64  // stdout lines that were not JSON
	// exited is called by a process's reaper once it has exited, before
	// Done is closed.
	exited func(*Process)
	// tools is the pool's in-process MCP server (Config.GoTools); nil
	// without tools.
	tools *tools
}

// Process is one running CLI process. It has been spawned with the pool's
// command, arguments, environment and working directory, and (if it was
// warm) has answered a readiness probe. A process from Acquire serves one
// request: write the request lines, close stdin, read stdout to the end.
// It never goes back to the pool. (Processes that StreamChat takes are
// reused; see Config.MaxUses.)
//
// ReadLine must not be called concurrently with itself; the other methods
// are safe for concurrent use.
type Process struct {
	set *procSettings
	cmd *exec.Cmd
	pid int

	stdinMu sync.Mutex // serializes writes and the close of stdin
	stdin   io.WriteCloser

	stdout  *os.File // read end of the stdout pipe
	reader  *bufio.Reader
	pending []byte // part of a line read before a deadline or an over-long line

	stderr     tailBuffer
	stderrR    *os.File
	stderrDone chan struct{} // closed when stderr reached EOF

	spawnedAt time.Time
	// token is the process's key at the pool's gateway; "" without one.
	token string
	// workDir is the process's own working directory, which its resets
	// empty and its exit removes; "" when it works in Config.Dir.
	workDir string
	// paused is the turn that waits for the caller's tool results; nil
	// when none does. Only the reader of the process's output uses it.
	paused *pausedTurn
	// mcpReady is set once the CLI has listed the pool's tools. Only the
	// reader of the process's output uses it.
	mcpReady bool

	// handed is what the pool tells the caller who acquired the process
	// (Warm, AcquireInfo, SystemPrompt), set before Acquire returns it.
	handed handout

	done chan struct{} // closed once the process has been reaped
	// waited is closed once cmd.Wait has returned: the process has
	// exited. done may follow up to StopGrace later (see reap).
	waited  chan struct{}
	waitErr error // cmd.Wait's result, valid after done

	stopOnce sync.Once
	stopErr  error
	stopDone chan struct{}
}

// AcquireInfo describes how a process was obtained.
type AcquireInfo struct {
	// Warm is true when the process came ready from the pool, false when
	// it was spawned cold for this acquire.
	Warm bool
	// Reused is true when the process served earlier chats and was reset
	// for this one.
	Reused bool
	// Uses is the number of chats the process has served, this one
	// included.
	Uses int
	// Continued is true when the process held the conversation this chat
	// continues: it received the new user message alone.
	Continued bool
	// Wait is the time Acquire took, measured with time.Since.
	Wait time.Duration
	// IdleAge is how long a warm process had been ready before it was
	// taken; 0 for a cold one.
	IdleAge time.Duration
	// PID is the process ID of the CLI.
	PID int
}

// PID returns the operating system's process ID.
func (p *Process) PID() int { return p.pid }

// handout is what a caller of Acquire is told about its process.
type handout struct {
	acquire AcquireInfo
	prompt  *SystemPrompt // from its first initialize; nil while it has had none
}

// Warm reports whether the process came ready from the pool.
func (p *Process) Warm() bool { return p.handed.acquire.Warm }

// AcquireInfo reports how the process was acquired.
func (p *Process) AcquireInfo() AcquireInfo { return p.handed.acquire }

// SystemPrompt returns the system prompt the process was given by its
// first initialize, and false while it has had none: only the first
// initialize of a process sets its prompt, so a caller of Acquire sends
// its own only when ok is false.
func (p *Process) SystemPrompt() (sp SystemPrompt, ok bool) {
	if p.handed.prompt == nil {
		return SystemPrompt{}, false
	}
	return *p.handed.prompt, true
}

// WriteLine writes line and a newline to the process's stdin. line must
// not contain a newline.
func (p *Process) WriteLine(line []byte) error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return fmt.Errorf("claudepool: write to process %d: stdin closed", p.pid)
	}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	if _, err := p.stdin.Write(buf); err != nil {
		return fmt.Errorf("claudepool: write to process %d: %w", p.pid, err)
	}
	return nil
}

// CloseStdin closes the process's stdin, which tells the CLI that no more
// input follows: it finishes the turn in flight and exits. Closing twice
// is not an error.
func (p *Process) CloseStdin() error {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin == nil {
		return nil
	}
	err := p.stdin.Close()
	p.stdin = nil
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("claudepool: close stdin of process %d: %w", p.pid, err)
	}
	return nil
}

// ReadLine returns the next stdout line without its newline. The slice is
// valid until the next call. At the end of the output it returns io.EOF.
// A line longer than Config.MaxLineBytes returns an error wrapping
// ErrLineTooLong.
func (p *Process) ReadLine() ([]byte, error) {
	for {
		frag, err := p.reader.ReadSlice('\n')
		if len(p.pending)+len(frag) > p.set.maxLine+1 {
			p.pending = p.pending[:0]
			return nil, fmt.Errorf("%w (limit %d bytes, process %d)", ErrLineTooLong, p.set.maxLine, p.pid)
		}
		switch {
		case err == nil:
			line := frag
			if len(p.pending) > 0 {
				line = append(p.pending, frag...)
				p.pending = p.pending[:0]
			}
			return trimEOL(line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			p.pending = append(p.pending, frag...)
		case errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed):
			if len(p.pending)+len(frag) > 0 {
				// A last line without a newline.
				line := append(p.pending, frag...)
				p.pending = nil
				return trimEOL(line), nil
			}
			// The output is over: release the pipe now rather than when
			// the garbage collector finds it.
			p.abandonOutput()
			return nil, io.EOF
		default:
			// A deadline or another read error: keep what was read so
			// that a retry continues the same line.
			p.pending = append(p.pending, frag...)
			return nil, err
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// setReadDeadline bounds the next ReadLine calls; the zero time removes
// the bound.
func (p *Process) setReadDeadline(t time.Time) {
	// Only fails when the pipe is already closed, which ReadLine reports.
	_ = p.stdout.SetReadDeadline(t)
}

// StderrTail returns the last bytes (up to 16 KiB) the process wrote to
// stderr.
func (p *Process) StderrTail() string { return p.stderr.String() }

// Done returns a channel that is closed once the process has exited and
// been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// exitedNow reports whether the process has been reaped.
func (p *Process) exitedNow() bool { return isClosed(p.done) }

// hasExited reports whether the process has exited, reaped or not: the
// reaper waits up to StopGrace for a stderr that a descendant holds.
func (p *Process) hasExited() bool { return isClosed(p.waited) }

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Wait waits until the process has exited, or ctx is done. It returns nil
// for exit code 0, an *ExitError otherwise, and ctx.Err() if ctx ended
// first.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.exitError()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// exitError converts the reaped status into an *ExitError (nil for a
// clean exit). Only valid after done is closed.
func (p *Process) exitError() error {
	if p.waitErr == nil {
		return nil
	}
	e := &ExitError{Code: -1, Stderr: p.stderr.String(), Err: p.waitErr}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		e.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.Signal = ws.Signal().String()
		}
	}
	return e
}

// exitWithoutResult is the error of a process that ended without the
// answer it owed: its exit error, or an *ExitError with code 0 for a clean
// exit, so that callers match every such end with errors.As. Only valid
// after done is closed.
func (p *Process) exitWithoutResult() error {
	if err := p.exitError(); err != nil {
		return err
	}
	return &ExitError{Code: 0, Stderr: p.stderr.String()}
}

// Interrupt sends SIGINT to the CLI, which aborts the turn in flight,
// prints an aborted result and exits 0.
func (p *Process) Interrupt() error {
	if p.exitedNow() {
		return nil
	}
	err := p.cmd.Process.Signal(sigInterrupt)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Stop ends the process and reaps it: it closes stdin (an idle CLI exits
// within milliseconds), waits up to Config.StopGrace, sends SIGTERM to the
// process group, waits up to StopGrace again, then sends SIGKILL. When ctx
// ends first, it skips to SIGKILL. Stop always returns after the process
// was reaped; it returns nil, or ctx.Err() if ctx forced the kill. Output
// not read yet is discarded. Calls after the first wait for the first and
// return its result.
func (p *Process) Stop(ctx context.Context) error {
	err := p.stop(ctx, func() { _ = p.CloseStdin() })
	// Nothing reads the output after a stop; release the pipe.
	p.abandonOutput()
	return err
}

// stop runs the stop sequence once with the given polite first step.
func (p *Process) stop(ctx context.Context, polite func()) error {
	p.stopOnce.Do(func() {
		p.stopErr = p.escalate(ctx, polite)
		close(p.stopDone)
	})
	<-p.stopDone
	return p.stopErr
}

func (p *Process) escalate(ctx context.Context, polite func()) error {
	grace := p.set.stopGrace
	wait := func(d time.Duration) (exited bool, ctxDone bool) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-p.done:
			return true, false
		case <-t.C:
			return false, false
		case <-ctx.Done():
			return false, true
		}
	}
	polite()
	exited, ctxDone := wait(grace)
	if exited {
		return nil
	}
	if !ctxDone {
		p.set.log.Debug("claudepool: process did not exit, sending SIGTERM", "pid", p.pid)
		_ = signalGroup(p.pid, sigTerm)
		exited, ctxDone = wait(grace)
		if exited {
			return nil
		}
	}
	p.set.log.Warn("claudepool: process did not stop, sending SIGKILL", "pid", p.pid)
	p.kill()
	<-p.done
	if ctxDone {
		return ctx.Err()
	}
	return nil
}

// kill sends SIGKILL to the process group at once.
func (p *Process) kill() {
	if !p.exitedNow() {
		if signalGroup(p.pid, sigKill) != nil {
			_ = p.cmd.Process.Kill()
		}
	}
}

// reap waits for the process to exit, then cleans up what it may have left
// behind. It runs in its own goroutine for the process's whole life.
func (p *Process) reap() {
	err := p.cmd.Wait()
	close(p.waited)
	// Tools the CLI started share its process group; any still alive now
	// are orphans that could hold the output pipes open.
	_ = signalGroup(p.pid, sigKill)
	t := time.NewTimer(p.set.stopGrace)
	select {
	case <-p.stderrDone:
	case <-t.C:
		// A process outside the group still holds stderr.
		_ = p.stderrR.Close()
		<-p.stderrDone
	}
	t.Stop()
	p.waitErr = err
	// The pool's counts are updated before done is closed, so that a
	// caller woken by done sees them final.
	p.set.exited(p)
	close(p.done)
}

// abandonOutput makes every pending and future ReadLine return at once;
// used when the output is no longer wanted and nothing may wait on a pipe
// that a stray process keeps open.
func (p *Process) abandonOutput() {
	_ = p.stdout.Close()
}

// drainStderr copies stderr into the tail buffer until EOF.
func (p *Process) drainStderr() {
	defer close(p.stderrDone)
	_, _ = io.Copy(&p.stderr, p.stderrR)
	_ = p.stderrR.Close()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
	max int
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(b)
	if len(b) >= t.max {
		t.buf = append(t.buf[:0], b[len(b)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(b) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, b...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
