package claudepool

import (
	"context"
	"fmt"
)

// checkAPIPrompt is the user message of CheckAPI: short, with a one-word
// answer, so that the check costs as few tokens as a request can.
const checkAPIPrompt = "Reply with the single word: ok"

// CheckAPI sends one minimal chat through the pool (a one-line prompt
// asking for a one-word reply, with the pool's default system prompt and
// model, on a warm process when one is ready) and returns nil when the
// API answered it. It proves what WaitReady cannot: that the CLI's
// credentials are accepted and the API is reachable.
//
// It returns the *ResultError of a refused request (APIErrorStatus 401 or
// 403 for a bad key, 429, 5xx ...), an *ExitError when the CLI died, or
// ctx's error; bound it with ctx, since the CLI retries an unreachable
// API for minutes. It costs one API call and its tokens, and counts like
// any chat in Stats (and Config.OnStreamEnd); call it at start-up, not
// for every health probe.
func (p *Pool) CheckAPI(ctx context.Context) error {
	s, err := NewAdapter(p).StreamChat(ctx, Request{
		Messages: []Message{{Role: RoleUser, Content: checkAPIPrompt}},
	})
	if err != nil {
		return fmt.Errorf("claudepool: check API: %w", err)
	}
	defer s.Close()
	for s.Next() {
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("claudepool: check API: %w", err)
	}
	return nil
}
