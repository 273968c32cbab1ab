package claudepool

// idleSet holds the pool's idle processes, oldest first. It is guarded by
// the pool's mutex. A pool holds a handful of processes, so a slice
// scanned from either end beats any index.
type idleSet struct {
	procs []*pooled
}

func (s *idleSet) len() int { return len(s.procs) }

func (s *idleSet) add(p *pooled) { s.procs = append(s.procs, p) }

// remove takes p out of the set and reports whether it was there.
func (s *idleSet) remove(p *pooled) bool {
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			return true
		}
	}
	return false
}

// best returns the idle process without a conversation that a request
// with prompt want should take, or nil: the most recently used one that
// carries want, else the most recently readied fresh one (no prompt
// yet). A nil want matches fresh processes only.
func (s *idleSet) best(want *SystemPrompt) *pooled {
	var fresh *pooled
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		switch {
		case p.life.held != nil:
		case p.life.prompt == nil:
			if fresh == nil {
				fresh = p
			}
		case want != nil && *p.life.prompt == *want:
			return p
		}
	}
	return fresh
}

// oldestExcept returns the least recently used idle process that does not
// carry want (a fresh one counts as carrying anything), or nil.
func (s *idleSet) oldestExcept(want *SystemPrompt) *pooled {
	for _, p := range s.procs {
		if p.life.prompt != nil && (want == nil || *p.life.prompt != *want) {
			return p
		}
	}
	return nil
}

// oldest returns the least recently used idle process for which match is
// true, or nil.
func (s *idleSet) oldest(match func(*pooled) bool) *pooled {
	for _, p := range s.procs {
		if match(p) {
			return p
		}
	}
	return nil
}

// count returns how many idle processes satisfy keep.
func (s *idleSet) count(keep func(*pooled) bool) int {
	n := 0
	for _, p := range s.procs {
		if keep(p) {
			n++
		}
	}
	return n
}
