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
// a reply held after its first chunk until a channel is closed, or a
// [Failure]: an HTTP error with an Anthropic-shaped body, or a request that is
// never answered.
//
// # Recording
//
// [Server.Requests] returns every request received; [Server.ChatRequests]
// only those that carry the user's conversation, leaving out the side
// requests the CLI makes on its own. [Server.WaitRequests] and
// [Server.WaitChatRequests] block until a given number has arrived, so tests
// wait on a signal instead of sleeping.
//
// # Shutdown
//
// [Server.Close] ends requests that are still streaming or never meant to be
// answered, then waits for every handler to return.
package claudepooltest
