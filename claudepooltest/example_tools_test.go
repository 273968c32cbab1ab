package claudepooltest_test

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/claudepool/claudepool/claudepooltest"
)

// CallTool answers a new turn with a tool call and, once the client sends
// the tool's result, with a text that quotes it. Here plain HTTP requests
// play the client; the real CLI runs the tool itself.
func ExampleCallTool() {
	srv := claudepooltest.NewServer(claudepooltest.Config{
		Reply: claudepooltest.CallTool("Read", map[string]string{"file_path": "/work/notes.txt"}),
	})
	defer srv.Close()

	ask := func(messages string) map[string]any {
		body := `{"model":"claude-sonnet-5-5","max_tokens":1024,"tools":[{"name":"Read"}],"messages":` + messages + `}`
		resp, err := srv.Client().Post(srv.URL()+"/v1/messages", "application/json", strings.NewReader(body))
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var reply map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&reply)
		return reply
	}

	turn := `[{"role":"user","content":"read my notes"}]`
	reply := ask(turn)
	call, _ := json.Marshal(reply["content"])
	fmt.Println(reply["stop_reason"], string(call))

	withResult := strings.TrimSuffix(turn, "]") +
		`,{"role":"assistant","content":` + string(call) + `}` +
		`,{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_mock_000001","content":"buy milk"}]}]`
	reply = ask(withResult)
	fmt.Println(reply["stop_reason"], reply["content"])

	r := srv.Requests()[1]
	fmt.Printf("%+v\n", r.LastToolResults())

	// Output:
	// tool_use [{"id":"toolu_mock_000001","input":{"file_path":"/work/notes.txt"},"name":"Read","type":"tool_use"}]
	// end_turn [map[text:tool said: buy milk type:text]]
	// [{ToolUseID:toolu_mock_000001 Content:buy milk IsError:false}]
}
