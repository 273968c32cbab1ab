package claudepooltest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
)

// A test starts a server, points the CLI at it with Env, and checks what the
// CLI sent. Here a plain HTTP request stands in for the CLI.
func ExampleServer() {
	srv := claudepooltest.NewServer(claudepooltest.Config{
		Reply: func(r claudepooltest.Request) claudepooltest.Reply {
			if r.LastUserText() == "fail" {
				return claudepooltest.Reply{Fail: claudepooltest.FailRateLimit}
			}
			return claudepooltest.Echo(r)
		},
	})
	defer srv.Close()

	for _, text := range []string{"hello", "fail"} {
		body := `{"model":"claude-sonnet-5-5","max_tokens":64,"system":"You are terse.",` +
			`"messages":[{"role":"user","content":"` + text + `"}]}`
		resp, err := srv.Client().Post(srv.URL()+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			fmt.Println(err)
			return
		}
		var reply map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&reply)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, reply["content"], reply["error"])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reqs, err := srv.WaitRequests(ctx, 2)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range reqs {
		fmt.Println(r.Seq, r.Kind, r.Model, r.System, r.LastUserText())
	}
	// These requests offer no tools, so they count as side requests; the
	// requests of a CLI turn always have a "tools" key (KindChat).

	// Output:
	// 200 [map[text:mock reply to: hello type:text]] <nil>
	// 429 <nil> map[message:mock rate limited type:rate_limit_error]
	// 1 side claude-sonnet-5-5 [You are terse.] hello
	// 2 side claude-sonnet-5-5 [You are terse.] fail
}
