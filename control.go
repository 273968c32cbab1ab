package claudepool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// controlRequest is a control line on the CLI's stdin:
// {"type":"control_request","request_id":"<id>","request":{"subtype":...}}.
type controlRequest struct {
	Type      string         `json:"type"`
	RequestID string         `json:"request_id"`
	Request   map[string]any `json:"request"`
}

// control sends a control request and waits for its control_response
// until deadline. Lines that arrive before the response are skipped:
// nothing else is expected before the user line. It returns the
// response's payload, or an error that wraps ErrNotReady on a timeout and
// describes the exit when the process ends first.
func (p *Process) control(deadline time.Time, request map[string]any) (json.RawMessage, error) {
	subtype, _ := request["subtype"].(string)
	id := "cp_" + strconv.FormatUint(p.pool.seq.Add(1), 36)
	line, err := json.Marshal(controlRequest{Type: "control_request", RequestID: id, Request: request})
	if err != nil {
		return nil, fmt.Errorf("claudepool: encode %s request: %w", subtype, err)
	}
	if err := p.WriteLine(line); err != nil {
		return nil, p.exitedBefore(subtype, err)
	}
	// Close moves the deadline of a starting process to now, under the
	// same lock, to abort its probe.
	p.pool.mu.Lock()
	if p.pool.closed && p.state.Load() == stateStarting {
		p.pool.mu.Unlock()
		return nil, ErrClosed
	}
	p.setReadDeadline(deadline)
	p.pool.mu.Unlock()
	defer p.setReadDeadline(time.Time{})
	for {
		out, err := p.ReadLine()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("%w: process %d did not answer %s within %v",
					ErrNotReady, p.pid, subtype, p.pool.cfg.ReadyTimeout)
			}
			if errors.Is(err, io.EOF) {
				return nil, p.exitedBefore(subtype, nil)
			}
			return nil, fmt.Errorf("claudepool: read answer to %s: %w", subtype, err)
		}
		_, ctrl, perr := parseLine(out)
		if perr != nil {
			p.pool.counters.malformedLines.Add(1)
			continue
		}
		if ctrl == nil || ctrl.RequestID != id {
			continue
		}
		if ctrl.Subtype != "success" {
			return nil, fmt.Errorf("claudepool: %s request failed: %s", subtype, ctrl.Error)
		}
		return ctrl.Response, nil
	}
}

// exitedBefore describes a process that ended before answering a control
// request. It waits (bounded by StopGrace) for the exit status so that the
// error can carry the exit code and stderr.
func (p *Process) exitedBefore(subtype string, cause error) error {
	t := time.NewTimer(p.pool.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-p.done:
		return fmt.Errorf("claudepool: process %d exited before answering %s: %w", p.pid, subtype, p.exitWithoutResult())
	case <-t.C:
		if cause != nil {
			return fmt.Errorf("claudepool: process %d closed its output before answering %s: %w", p.pid, subtype, cause)
		}
		return fmt.Errorf("claudepool: process %d closed its output before answering %s", p.pid, subtype)
	}
}

// probe is the readiness check of a warm process: a harmless mcp_status
// request. It is not initialize, because only the first initialize of a
// process sets its system prompt, and that belongs to the request that
// later claims the process, unless the pool fixes it (see specialize).
func (p *Process) probe() error {
	_, err := p.control(time.Now().Add(p.pool.cfg.ReadyTimeout), map[string]any{"subtype": "mcp_status"})
	return err
}

// specialize gives a ready process the pool's Config.Prompt, so that a
// chat on it starts with the user line.
func (p *Process) specialize(sp SystemPrompt) error {
	if _, err := p.control(time.Now().Add(p.pool.cfg.ReadyTimeout), sp.initialize()); err != nil {
		return err
	}
	p.initialized = true
	return nil
}
