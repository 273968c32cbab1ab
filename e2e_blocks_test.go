package claudepool

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/claudepool/claudepool/claudepooltest"
	"github.com/stretchr/testify/require"
)

// apiBlocks returns the content blocks of every message of a request the
// mock received, as the API read them.
func apiBlocks(t *testing.T, r claudepooltest.Request) [][]map[string]any {
	t.Helper()
	var body struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(r.Body, &body))
	var out [][]map[string]any
	for _, m := range body.Messages {
		var blocks []map[string]any
		if json.Unmarshal(m.Content, &blocks) != nil {
			blocks = nil
		}
		out = append(out, blocks)
	}
	return out
}

// findBlock returns the first block of type typ in the request, and the
// index of its message.
func findBlock(t *testing.T, r claudepooltest.Request, typ string) (map[string]any, int) {
	t.Helper()
	for i, blocks := range apiBlocks(t, r) {
		for _, b := range blocks {
			if b["type"] == typ {
				return b, i
			}
		}
	}
	t.Fatalf("no %s block in the request: %s", typ, r.Body)
	return nil, 0
}

// On the real CLI: an image and a PDF reach the API as blocks, with their
// bytes, beside the chat's text.
func TestE2EImageAndDocument(t *testing.T) {
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	img := testPNG(t, 7)
	for _, tc := range []struct {
		name  string
		block Block
		typ   string
		data  []byte
	}{
		{"image", ImageBlock("image/png", img), "image", img},
		{"pdf", DocumentBlock("application/pdf", testPDF), "document", testPDF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.mock.Reset()
			s, _ := chatOK(t, ctx, a, Request{Messages: []Message{{Role: RoleUser, Content: "describe it", Blocks: []Block{tc.block}}}})
			require.Equal(t, claudepooltest.EchoPrefix+"describe it", s.Result().Text)
			reqs := e.mock.ChatRequests()
			require.Len(t, reqs, 1)
			b, msg := findBlock(t, reqs[0], tc.typ)
			require.Zero(t, msg)
			src := b["source"].(map[string]any)
			require.Equal(t, "base64", src["type"])
			require.Equal(t, base64.StdEncoding.EncodeToString(tc.data), src["data"])
			require.Equal(t, []string{"text", tc.typ}, reqs[0].Messages[0].Types)
		})
	}
}

// On the real CLI: an image in an earlier turn stays an image block, in
// the held conversation (a real earlier turn) and in the rendered
// transcript (in its place between the turns' text).
func TestE2EImageInAnEarlierTurn(t *testing.T) {
	img := testPNG(t, 8)
	for _, hold := range []bool{true, false} {
		t.Run(map[bool]string{true: "held", false: "rendered"}[hold], func(t *testing.T) {
			ctx := e2eCtx(t, 2*time.Minute)
			e := newE2E(t, claudepooltest.Config{})
			cfg := Config{Size: 1, MaxProcs: 2}
			if !hold {
				cfg.HoldConversations = -1
			}
			p, _ := e.pool(t, cfg)
			a := NewAdapter(p)
			require.NoError(t, p.WaitReady(ctx))

			first := Request{Messages: []Message{{Role: RoleUser, Content: "what is this?", Blocks: []Block{ImageBlock("image/png", img)}}}}
			s1, _ := chatOK(t, ctx, a, first)
			waitQuiet(t, ctx, p)
			e.mock.Reset()
			next := continued(first, s1.Result().Text, "and now?")
			s2, _ := chatOK(t, ctx, a, next)
			require.Equal(t, hold, s2.Acquire().Continued)

			reqs := e.mock.ChatRequests()
			require.Len(t, reqs, 1)
			b, msg := findBlock(t, reqs[0], "image")
			require.Equal(t, base64.StdEncoding.EncodeToString(img), b["source"].(map[string]any)["data"])
			if hold {
				// Real turns: user (text, image), assistant, user.
				require.Zero(t, msg)
				require.Equal(t, "and now?", reqs[0].LastUserText())
			} else {
				// One user message: the history's text, the image in its
				// place, the rest of the text.
				require.Equal(t, []string{"text", "image", "text"}, reqs[0].Messages[msg].Types)
				require.Contains(t, reqs[0].Messages[msg].Texts[0], "what is this?")
				require.Contains(t, reqs[0].Messages[msg].Texts[1], "and now?")
			}
		})
	}
}

// On the real CLI: a chat's thinking budget reaches the API, and the
// reply's thinking arrives as thinking blocks and thinking deltas and in
// Result.Thinking, while the text stays the answer's.
func TestE2EThinking(t *testing.T) {
	const thought = "Let me think about this carefully."
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		rep := claudepooltest.Echo(r)
		rep.Thinking = thought
		return rep
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1, PartialMessages: true})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	req := userMsg("think")
	req.Thinking = &Thinking{Type: ThinkingEnabled, BudgetTokens: 2048}
	s, evs := chatOK(t, ctx, a, req)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	var th map[string]any
	require.NoError(t, json.Unmarshal(reqs[0].Thinking, &th))
	require.Equal(t, "enabled", th["type"])
	require.EqualValues(t, 2048, th["budget_tokens"])

	var deltas, blocks, text strings.Builder
	for _, ev := range evs {
		text.WriteString(ev.Text())
		if ev.Type == EventPartial && ev.Partial.DeltaType == "thinking_delta" {
			deltas.WriteString(ev.Partial.Text)
		}
		if ev.Type == EventAssistant {
			for _, b := range ev.Message.Content {
				if b.Type == "thinking" {
					blocks.WriteString(b.Thinking)
				}
			}
		}
	}
	require.Equal(t, thought, deltas.String())
	require.Equal(t, thought, blocks.String())
	require.Equal(t, thought, s.Result().Thinking)
	require.Equal(t, claudepooltest.EchoPrefix+"think", s.Result().Text)
	require.Equal(t, strings.Repeat(claudepooltest.EchoPrefix+"think", 2), text.String(), "the text, as deltas and as the whole message")
}

// On the real CLI: a chat's JSON schema reaches the API as its structured
// output format, and a reply that is JSON arrives in Result.JSON.
func TestE2EStructuredOutput(t *testing.T) {
	const schema = `{"type":"object","properties":{"city":{"type":"string"},"population":{"type":"integer"}},"required":["city","population"],"additionalProperties":false}`
	ctx := e2eCtx(t, 2*time.Minute)
	e := newE2E(t, claudepooltest.Config{Reply: func(r claudepooltest.Request) claudepooltest.Reply {
		return claudepooltest.Reply{Text: `{"city":"Lyon","population":522250}`}
	}})
	p, _ := e.pool(t, Config{Size: 1, MaxProcs: 1})
	a := NewAdapter(p)
	require.NoError(t, p.WaitReady(ctx))

	req := userMsg("the third city of France, as JSON")
	req.OutputSchema = json.RawMessage(schema)
	s, _ := chatOK(t, ctx, a, req)
	reqs := e.mock.ChatRequests()
	require.Len(t, reqs, 1)
	var oc struct {
		Format struct {
			Type   string          `json:"type"`
			Schema json.RawMessage `json:"schema"`
		} `json:"format"`
	}
	require.NoError(t, json.Unmarshal(reqs[0].OutputConfig, &oc), "%s", reqs[0].OutputConfig)
	require.Equal(t, "json_schema", oc.Format.Type)
	require.JSONEq(t, schema, string(oc.Format.Schema))

	// The reply parses against its schema.
	var got struct {
		City       *string `json:"city"`
		Population *int    `json:"population"`
	}
	dec := json.NewDecoder(strings.NewReader(string(s.Result().JSON)))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got))
	require.NotNil(t, got.City)
	require.NotNil(t, got.Population)
	require.Equal(t, "Lyon", *got.City)

	// A chat without a schema gets no JSON, even when its text is JSON.
	s2, _ := chatOK(t, ctx, a, userMsg("plain"))
	require.Nil(t, s2.Result().JSON)
}
