// Package claudepooltest provides a local mock of the Anthropic Messages API
// for testing code that drives the real Claude Code CLI (claude) without
// network access.
//
// A [Server] listens on 127.0.0.1 only. Point a CLI at it with the variables
// from [Server.Env]: the CLI then sends its API traffic to the mock, which
// streams scripted or echoed replies, fails on demand, and records every
// request so that a test can check the model, system prompt and messages the
// CLI sent.
//
// # Replies
//
// By default a chat request is answered with "mock reply to: " followed by the
// last user text. [Config.Reply] (or [Server.SetReply]) scripts replies per
// request: a fixed text, a reply split into chunks with a delay between them,
// a reply held after its first chunk until a channel is closed, a reply that
// begins with a thinking block ([Reply.Thinking]) as with extended thinking,
// one that calls tools ([Reply.ToolCalls]), or a [Failure]: an HTTP error
// with an Anthropic-shaped body, or a request that is never answered.
//
// # Tools
//
// [Reply.ToolCalls] makes a reply call tools as the model does: after its
// text, one tool_use block per call, streamed with input_json_delta events
// or sent whole, and stop_reason "tool_use". The client runs the tools
// and asks again with their results; the recorded [Message.ToolResults]
// (and [Request.LastToolResults], those of the last user message) hold
// them, [Message.ToolUses] the calls of the history. [CallTool] scripts
// the usual exchange: a call of one tool in each new turn, then a text
// that quotes its result. With --tools Read, Claude Code 2.1.330 reads a
// file of its working directory for such a call without asking
// (--allowedTools Read allows it by rule), and sends its content back
// numbered as cat -n does.
//
// # Stops
//
// As the Messages API does, the request can end a reply early, streamed or
// not: a reply text that contains one of the request's stop_sequences is
// cut before it and ends with stop_reason "stop_sequence" and that
// sequence as its stop_sequence; a reply whose estimated output tokens (1 +
// characters/4) exceed the request's max_tokens is cut to its first
// 4*max_tokens-1 characters and ends with stop_reason "max_tokens". When
// both apply the earlier stop wins, and the usage reports what was
// generated. Neither cuts a reply's thinking, which the mock sends whole
// and counts apart from max_tokens. The CLI asks max_tokens 32000 or more,
// so only its one-token model probe (max_tokens 1) is cut in practice. [Reply.StopReason] ends
// a whole reply with any other stop reason, such as [StopRefusal] or
// [StopMaxTokens] regardless of the request's limit; [Reply] has the
// details.
//
// # Latency
//
// By default the mock answers as fast as it can. For latency benchmarks two
// knobs make it answer at a real API's pace:
//
//   - [Config.FirstByteDelay] (per reply: [Reply.Delay]) pauses before the
//     first byte of every Messages response, streamed or not, successful or
//     an error; HEAD /api/hello and count_tokens are answered at once.
//   - [Config.TokensPerSecond] (per reply: [Reply.TokensPerSecond]) paces a
//     streamed reply: its estimated output tokens (1 + characters/4, as its
//     usage reports, thinking and tool calls included) take tokens/rate from the first
//     byte to its end, the deltas spread over that time by the characters
//     before each, one delta per token unless a chunk count is set.
//
// Both pauses end when the client goes away or the server is closed.
// [Request.Time] and [Request.FirstByte] record when each request arrived and
// when its response began, so that a benchmark can subtract the mock's own
// time to first byte from what its user saw.
//
// # Recording
//
// [Server.Requests] returns every request received; [Server.ChatRequests]
// only those that carry the user's conversation, leaving out the side
// requests the CLI makes on its own. Each [Request] keeps the fields a test
// usually checks (model, system texts, messages reduced to their text,
// the types of their content blocks, their tool calls and tool results,
// the tools offered), the ones a proxy in front of the API sets or reads
// (headers with the credentials, max_tokens, temperature, top_p, top_k,
// stop_sequences, metadata.user_id, thinking, output_config) and the whole
// raw JSON body, [Request.Body], to search for anything else. A body whose
// fields have the wrong JSON type is answered 400 invalid_request_error,
// and recorded too.
// [Server.WaitRequests] and [Server.WaitChatRequests] block until a given
// number has arrived, so tests wait on a signal instead of sleeping.
//
// # Shutdown
//
// [Server.Close] ends requests that are still streaming, paused or never
// meant to be answered, then waits for every handler to return.
package claudepooltest
