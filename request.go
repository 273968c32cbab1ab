package claudepool

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Role says who wrote a Message.
type Role string

// The roles of a conversation.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one turn of a conversation.
type Message struct {
	Role    Role   // RoleUser or RoleAssistant
	Content string // the text of the turn
	// Blocks follow Content in the turn: images, documents and more text
	// (see Block). An assistant turn carries text blocks only. A message
	// needs Content or Blocks.
	Blocks []Block
}

// Request is one chat request. Everything in it applies to one turn on one
// process; settings the CLI only takes at spawn time (tools, permission
// mode, MCP servers, --max-turns, environment variables such as
// API_TIMEOUT_MS, the retry count) belong to the pool's Config instead.
type Request struct {
	// Messages is the conversation, oldest first. It must not be empty and
	// the last message must be the user's. Earlier turns are rendered into
	// the single user line the CLI receives; see RenderTranscript.
	Messages []Message

	// System replaces the CLI's default system prompt. When both System
	// and AppendSystem are empty, the request gets the pool's
	// Config.Prompt, or, when the pool has none, an empty system prompt,
	// as a chat backend usually wants: the CLI's own agent prompt (several
	// thousand characters about coding) is then not sent. Only the first
	// initialize of a process sets its prompt: a prompt other than the
	// pool's is served by an idle process that carries it, else by a fresh
	// one (only without Config.Prompt), else by a cold spawn.
	System string

	// AppendSystem is appended to the system prompt. With System empty it
	// extends the CLI's own default system prompt.
	AppendSystem string

	// Model selects the model for this request, e.g. "sonnet", "opus" or
	// a full model ID. Empty runs the pool's Config.Model (or the CLI's
	// default without one). A model the CLI refuses fails the chat with a
	// *ResultError (see SubtypeModelRejected).
	Model string

	// The Messages API parameters below are set on the chat's API calls
	// by the pool's gateway (see Config.NoGateway), over what the CLI
	// sends. A request that sets any of them on a pool whose gateway is
	// off fails with ErrNoGateway.

	// MaxTokens is the chat's max_tokens. 0 keeps the CLI's (32000 or
	// 128000, by model). A reply cut there ends with Result.StopReason
	// "max_tokens".
	MaxTokens int
	// Temperature, TopP and TopK are the sampling parameters; nil keeps
	// the API's defaults. The API refuses them with extended thinking, so
	// a chat that sets any of them runs without the thinking the CLI asks
	// for.
	Temperature *float64
	TopP        *float64
	TopK        *int
	// StopSequences end the reply where the model writes one of them:
	// Result.StopReason is then "stop_sequence" and Result.StopSequence
	// names it.
	StopSequences []string
	// UserID is the chat's metadata.user_id, an opaque id of the end user
	// for the API's abuse detection. "" keeps the CLI's own (a device
	// hash and its session id).
	UserID string
	// APIFields sets further top-level fields of the Messages API body,
	// each to its JSON value as given (for example
	// {"service_tier": json.RawMessage(`"auto"`)}). They win over the CLI's and over the fields above.
	// The fields the CLI owns, "model", "messages", "system", "stream"
	// and "tools", cannot be set.
	APIFields map[string]json.RawMessage
	// Thinking sets the chat's extended thinking. nil keeps the CLI's
	// (adaptive thinking, on the models that have it). The thinking
	// arrives in the assistant events' thinking blocks (and as
	// thinking_delta partial events with Config.PartialMessages) and in
	// Result.Thinking; the stream's text stays the answer's.
	Thinking *Thinking
	// OutputSchema is a JSON schema (an object) that the reply must
	// follow, the API's structured output: Result.Text is then JSON valid
	// for it, and Result.JSON holds it. It is set on the chat's API calls
	// by the gateway, so that a warm process serves any schema.
	OutputSchema json.RawMessage
	// GoTools names the pool's GoTools this chat offers the model; nil
	// offers them all. The gateway removes the others from the chat's API
	// calls (the CLI's own tools stay).
	GoTools []string
	// ToolChoice is the Messages API's tool_choice for this chat: "auto",
	// "any", "none", or a tool's Name (of the pool's GoTools) that the
	// model must call. "" keeps the API's default (auto). The API takes no
	// extended thinking with "any" or a tool's name: the chat then runs
	// without the CLI's.
	ToolChoice string
	// CanUseTool decides this chat's tool calls that need a permission,
	// in place of Config.CanUseTool.
	CanUseTool func(context.Context, PermissionRequest) Permission
	// APIKey is the upstream API key of this chat's calls, for a backend
	// that bills each tenant's key. "" uses the pool's (Config.APIKey).
	// The key never reaches the CLI.
	APIKey string
}

// Thinking is a chat's extended thinking.
type Thinking struct {
	// Type is ThinkingEnabled (with BudgetTokens), ThinkingAdaptive (the
	// model decides how much to think) or ThinkingDisabled.
	Type string
	// BudgetTokens is ThinkingEnabled's budget: at least 1024, and below
	// the chat's MaxTokens when it sets one.
	BudgetTokens int
	// Effort is the API's output_config.effort ("low", "medium", "high",
	// "max"); "" keeps the CLI's.
	Effort string
}

// The kinds of Thinking.
const (
	ThinkingEnabled  = "enabled"
	ThinkingAdaptive = "adaptive"
	ThinkingDisabled = "disabled"
)

// apiParams reports whether r sets any parameter only the gateway can
// apply.
func (r *Request) apiParams() bool {
	return r.MaxTokens != 0 || r.GoTools != nil || r.ToolChoice != "" || r.Temperature != nil || r.TopP != nil || r.TopK != nil ||
		len(r.StopSequences) > 0 || r.UserID != "" || len(r.APIFields) > 0 || r.APIKey != "" ||
		r.Thinking != nil || r.OutputSchema != nil
}

// cliFields are the body fields the CLI owns: a request cannot set them.
var cliFields = map[string]bool{"model": true, "messages": true, "system": true, "stream": true, "tools": true}

// validateAPI reports a malformed API parameter.
func (r *Request) validateAPI() error {
	switch {
	case r.MaxTokens < 0:
		return fmt.Errorf("%w: MaxTokens %d is negative", ErrInvalidRequest, r.MaxTokens)
	case r.Temperature != nil && (*r.Temperature < 0 || *r.Temperature > 1):
		return fmt.Errorf("%w: Temperature %v is outside [0, 1]", ErrInvalidRequest, *r.Temperature)
	case r.TopP != nil && (*r.TopP < 0 || *r.TopP > 1):
		return fmt.Errorf("%w: TopP %v is outside [0, 1]", ErrInvalidRequest, *r.TopP)
	case r.TopK != nil && *r.TopK < 0:
		return fmt.Errorf("%w: TopK %d is negative", ErrInvalidRequest, *r.TopK)
	case strings.ContainsAny(r.APIKey, " \t\r\n\x00") || !utf8.ValidString(r.APIKey):
		return fmt.Errorf("%w: APIKey contains white space or is not valid UTF-8", ErrInvalidRequest)
	case !utf8.ValidString(r.UserID):
		return fmt.Errorf("%w: UserID is not valid UTF-8", ErrInvalidRequest)
	}
	if th := r.Thinking; th != nil {
		switch th.Type {
		case ThinkingEnabled:
			if th.BudgetTokens < 1024 {
				return fmt.Errorf("%w: Thinking.BudgetTokens %d is below the API's minimum of 1024", ErrInvalidRequest, th.BudgetTokens)
			}
			if r.MaxTokens > 0 && th.BudgetTokens >= r.MaxTokens {
				return fmt.Errorf("%w: Thinking.BudgetTokens %d is not below MaxTokens %d", ErrInvalidRequest, th.BudgetTokens, r.MaxTokens)
			}
		case ThinkingAdaptive, ThinkingDisabled:
			if th.BudgetTokens != 0 {
				return fmt.Errorf("%w: Thinking.BudgetTokens is for %q thinking only", ErrInvalidRequest, ThinkingEnabled)
			}
		default:
			return fmt.Errorf("%w: Thinking.Type %q (want %q, %q or %q)", ErrInvalidRequest, th.Type, ThinkingEnabled, ThinkingAdaptive, ThinkingDisabled)
		}
		if th.Type != ThinkingDisabled && (r.Temperature != nil || r.TopP != nil || r.TopK != nil) {
			return fmt.Errorf("%w: the API takes no Temperature, TopP or TopK with thinking", ErrInvalidRequest)
		}
		if strings.ContainsAny(th.Effort, " \t\r\n\"\\") || !utf8.ValidString(th.Effort) {
			return fmt.Errorf("%w: Thinking.Effort %q is not an effort level", ErrInvalidRequest, th.Effort)
		}
	}
	for _, name := range r.GoTools {
		if !toolName.MatchString(name) {
			return fmt.Errorf("%w: GoTools names %q, which is not a tool's name", ErrInvalidRequest, name)
		}
	}
	switch r.ToolChoice {
	case "", "auto", "none":
	default:
		if r.ToolChoice != "any" && !toolName.MatchString(r.ToolChoice) {
			return fmt.Errorf("%w: ToolChoice %q is neither auto, any, none nor a tool's name", ErrInvalidRequest, r.ToolChoice)
		}
		if r.Thinking != nil && r.Thinking.Type != ThinkingDisabled {
			return fmt.Errorf("%w: the API takes no thinking with a forced tool choice (%q)", ErrInvalidRequest, r.ToolChoice)
		}
	}
	if r.OutputSchema != nil {
		var schema map[string]json.RawMessage
		if err := json.Unmarshal(r.OutputSchema, &schema); err != nil {
			return fmt.Errorf("%w: OutputSchema is not a JSON object: %w", ErrInvalidRequest, err)
		}
	}
	for i, seq := range r.StopSequences {
		if seq == "" || !utf8.ValidString(seq) {
			return fmt.Errorf("%w: stop sequence %d is empty or not valid UTF-8", ErrInvalidRequest, i)
		}
	}
	for k, v := range r.APIFields {
		if cliFields[k] {
			return fmt.Errorf("%w: APIFields cannot set %q, which the CLI owns", ErrInvalidRequest, k)
		}
		if !json.Valid(v) {
			return fmt.Errorf("%w: APIFields[%q] is not a JSON value", ErrInvalidRequest, k)
		}
	}
	return nil
}

// validate reports a malformed request, wrapping ErrInvalidRequest.
func (r *Request) validate() error {
	if len(r.Messages) == 0 {
		return fmt.Errorf("%w: no messages", ErrInvalidRequest)
	}
	images, size := 0, 0
	for i, m := range r.Messages {
		switch m.Role {
		case RoleUser, RoleAssistant:
		default:
			return fmt.Errorf("%w: message %d has role %q (want %q or %q)", ErrInvalidRequest, i, m.Role, RoleUser, RoleAssistant)
		}
		if strings.TrimSpace(m.Content) == "" && len(m.Blocks) == 0 {
			return fmt.Errorf("%w: message %d is empty", ErrInvalidRequest, i)
		}
		if !utf8.ValidString(m.Content) {
			return fmt.Errorf("%w: message %d is not valid UTF-8", ErrInvalidRequest, i)
		}
		for j := range m.Blocks {
			if err := m.Blocks[j].validate(i, j, m.Role); err != nil {
				return err
			}
			switch b := &m.Blocks[j]; {
			case b.Type == BlockImage:
				images++
				size += base64.StdEncoding.EncodedLen(len(b.Data))
			case b.Data != nil:
				size += base64.StdEncoding.EncodedLen(len(b.Data))
			default:
				size += len(b.Text)
			}
		}
		size += len(m.Content)
	}
	if err := validateToolResults(r.Messages); err != nil {
		return err
	}
	if images > MaxImages {
		return fmt.Errorf("%w: %d images; the API takes at most %d in a request", ErrInvalidRequest, images, MaxImages)
	}
	if size > MaxRequestBytes {
		return fmt.Errorf("%w: the messages come to %d bytes; the API takes requests of at most %d", ErrInvalidRequest, size, MaxRequestBytes)
	}
	if last := r.Messages[len(r.Messages)-1]; last.Role != RoleUser {
		return fmt.Errorf("%w: the last message must be the user's, got %q", ErrInvalidRequest, last.Role)
	}
	for name, v := range map[string]string{"System": r.System, "AppendSystem": r.AppendSystem, "Model": r.Model} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidRequest, name)
		}
	}
	if strings.ContainsAny(r.Model, " \t\r\n") {
		return fmt.Errorf("%w: model %q contains white space", ErrInvalidRequest, r.Model)
	}
	return r.validateAPI()
}

// RenderTranscript renders a conversation into the text of the single user
// line the CLI receives when no process holds the conversation before the
// last message (see Config.HoldConversations). A one-message conversation
// is the message itself. Longer ones use this stable format, which the
// model reads as earlier turns followed by the message to answer:
//
//	<conversation_history>
//	<turn role="user">
//	first question
//	</turn>
//	<turn role="assistant">
//	first answer
//	</turn>
//	</conversation_history>
//
//	<current_message>
//	follow-up question
//	</current_message>
//
// In this format, message text is escaped as XML text is (& as &amp;, < as
// &lt;, > as &gt;), so that no message can open or close a turn. A
// message's text blocks follow its Content, each on a line of its own;
// its images and documents are not text: the user line carries them as
// blocks of their own in their places, between pieces of this text.
func RenderTranscript(msgs []Message) string {
	if len(msgs) == 1 {
		parts := []string{msgs[0].Content}
		for _, b := range msgs[0].Blocks {
			if b.Type == BlockText {
				parts = append(parts, b.Text)
			}
		}
		if parts[0] == "" {
			parts = parts[1:]
		}
		return strings.Join(parts, "\n")
	}
	var b strings.Builder
	for _, block := range renderBlocks(msgs) {
		if block.Type == "text" {
			b.WriteString(block.Text)
		}
	}
	return b.String()
}

// transcriptEscaper escapes message text in a rendered transcript.
var transcriptEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// validateToolResults checks that every tool_result answers a tool_use of
// the assistant message just before it.
func validateToolResults(msgs []Message) error {
	for i, m := range msgs {
		for j, b := range m.Blocks {
			if b.Type != BlockToolResult {
				continue
			}
			if i == 0 || msgs[i-1].Role != RoleAssistant || !slices.ContainsFunc(msgs[i-1].Blocks, func(u Block) bool {
				return u.Type == BlockToolUse && u.ID == b.ToolUseID
			}) {
				return fmt.Errorf("%w: message %d block %d: tool_result %q answers no tool_use of the message before it", ErrInvalidRequest, i, j, b.ToolUseID)
			}
		}
	}
	return nil
}
