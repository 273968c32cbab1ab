package claudepool

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"time"
)

// spawner starts the pool's processes. Every start runs on one OS thread
// that the spawner locks for the pool's whole life: on Linux a child gets
// SIGKILL when the thread that forked it exits (Pdeathsig, which the pool
// sets so that children die with a crashed backend). That is the thread,
// not the process (golang/go#27505), and any goroutine that locks its
// thread and returns without unlocking ends the thread it ran on. Forking
// from a thread nobody else can end keeps the orphan protection without
// exposing chats to what unrelated code does with its threads.
type spawner struct {
	path string
	argv []string
	env  []string
	dir  string
	// ownDir is true when dir was created by the pool, which then
	// recreates it if a temp cleaner removed it.
	ownDir bool
	set    *procSettings
	// gw, when set, gives each process a token of its own.
	gw *gateway

	reqs chan spawnReq
	quit chan struct{} // closed by stop
	done chan struct{} // closed when run has returned
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner(path string, argv, env []string, dir string, ownDir bool, set *procSettings) *spawner {
	s := &spawner{path: path, argv: argv, env: env, dir: dir, ownDir: ownDir, set: set,
		reqs: make(chan spawnReq), quit: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

// run is the spawner's locked thread.
func (s *spawner) run() {
	defer close(s.done)
	runtime.LockOSThread()
	// Unlock on the way out: every child has been reaped by then (stop
	// comes last in Close), and the thread may go back to the runtime.
	defer runtime.UnlockOSThread()
	for {
		select {
		case r := <-s.reqs:
			r.err <- r.cmd.Start()
		case <-s.quit:
			return
		}
	}
}

// stop ends the spawner's goroutine. Only call it once no process of the
// pool is alive.
func (s *spawner) stop() {
	close(s.quit)
	<-s.done
}

// startCmd runs cmd.Start on the spawner's thread.
func (s *spawner) startCmd(cmd *exec.Cmd) error {
	r := spawnReq{cmd: cmd, err: make(chan error, 1)}
	select {
	case s.reqs <- r:
		return <-r.err
	case <-s.quit:
		return ErrClosed
	}
}

// spawn starts one CLI process. The caller must have reserved a process
// slot of the pool; on error it releases it.
func (s *spawner) spawn() (*Process, error) {
	p, err := s.spawnOnce()
	if err != nil && !errors.Is(err, ErrClosed) && s.ownDir && errors.Is(s.dirError(err), fs.ErrNotExist) {
		// The pool's private directory was removed while the pool ran
		// (a temp cleaner): make it again.
		if mkErr := os.MkdirAll(s.dir, 0o700); mkErr == nil {
			s.set.log.Warn("claudepool: recreated the removed working directory", "dir", s.dir)
			p, err = s.spawnOnce()
		}
	}
	return p, err
}

func (s *spawner) spawnOnce() (*Process, error) {
	cmd := exec.Command(s.path, s.argv...)
	cmd.Dir = s.dir
	// A directory of its own, inside the pool's, which the reset empties:
	// nothing a chat writes stays for the next one.
	workDir, err := os.MkdirTemp(s.dir, "proc-")
	if err != nil {
		return nil, s.startError(err)
	}
	cmd.Dir = workDir
	cmd.Env = s.env
	// A mark of its own, which whatever it starts inherits: a reset finds
	// by it what escaped the process's group and tree (procgroup.go).
	var mark [12]byte
	_, _ = rand.Read(mark[:])
	cmd.Env = append(slices.Clip(s.env), processMark+"="+hex.EncodeToString(mark[:]))
	var token string
	if s.gw != nil {
		token = s.gw.register()
		cmd.Env = append(cmd.Env, "ANTHROPIC_API_KEY="+token)
	}
	cmd.SysProcAttr = sysProcAttr()

	stdin, err := cmd.StdinPipe()
	if err != nil {
		_ = os.RemoveAll(workDir)
		return nil, fmt.Errorf("claudepool: stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = stdin.Close()
		return nil, fmt.Errorf("claudepool: stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = stdin.Close()
		_ = outR.Close()
		_ = outW.Close()
		return nil, fmt.Errorf("claudepool: stderr pipe: %w", err)
	}
	// Both output pipes are *os.File, so os/exec starts no copying
	// goroutine of its own and Wait never blocks on them.
	cmd.Stdout = outW
	cmd.Stderr = errW

	spawned := time.Now()
	err = s.startCmd(cmd)
	_ = outW.Close()
	_ = errW.Close()
	if err != nil && token != "" {
		s.gw.forget(token)
	}
	if err != nil && workDir != "" {
		_ = os.RemoveAll(workDir)
	}
	if err != nil {
		_ = outR.Close()
		_ = errR.Close()
		if errors.Is(err, ErrClosed) {
			_ = stdin.Close()
			return nil, err
		}
		return nil, s.startError(err)
	}
	p := &Process{
		set:        s.set,
		cmd:        cmd,
		pid:        cmd.Process.Pid,
		stdin:      stdin,
		stdout:     outR,
		reader:     bufio.NewReaderSize(outR, 64<<10),
		stderrR:    errR,
		stderrDone: make(chan struct{}),
		spawnedAt:  spawned,
		token:      token,
		workDir:    workDir,
		done:       make(chan struct{}),
		waited:     make(chan struct{}),
		stopDone:   make(chan struct{}),
	}
	p.stderr.max = stderrTailBytes
	return p, nil
}

// startError names what made a start fail: the working directory, or the
// executable.
func (s *spawner) startError(err error) error {
	if derr := s.dirError(err); derr != nil {
		return fmt.Errorf("claudepool: working directory %s: %w", s.dir, derr)
	}
	// ENOEXEC: the file is there and executable but not a program (a
	// truncated download, another architecture).
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) {
		return fmt.Errorf("%w: %s: %w", ErrCLINotFound, s.path, err)
	}
	return fmt.Errorf("claudepool: start %s: %w", s.path, err)
}

// dirError returns why the working directory made a failed start fail, or
// nil when it is usable. os.StartProcess checks the directory itself only
// without SysProcAttr; with the pool's, a chdir that fails in the child
// comes back as a fork/exec error naming the executable.
func (s *spawner) dirError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Op == "chdir" {
		return pe.Err
	}
	fi, err := os.Stat(s.dir)
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case err != nil:
		return err
	case !fi.IsDir():
		return syscall.ENOTDIR
	}
	return nil
}
