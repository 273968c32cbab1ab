// The agent-sdk way of BenchmarkE2ETool (e2e_tools_bench_test.go): the
// official TypeScript Agent SDK driving the pinned Claude Code CLI, with
// the benchmark's tool, "add", defined in-process (createSdkMcpServer and
// tool()). One long-lived node process runs every chat of a run, so that
// node's own start-up is not counted.
//
// Environment: CLAUDEPOOL_CLI, the CLI's path (pathToClaudeCodeExecutable);
// BENCH_CWD, the CLI's working directory; BENCH_SYSTEM, the system prompt;
// the mock API's ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY and the HOME of
// the CLI, which inherits node's environment.
//
// Protocol, one JSON object a line. At start-up the script pre-warms a CLI
// process with startup() and prints {"ready":true,"startupMs":...}. Then,
// for each line {"text":"..."} on stdin, it runs one chat with that user
// text on the pre-warmed process while it pre-warms the next one, and
// once both are done prints
//
//	{"startEpochMs":..,"finalTextMs":..,"resultMs":..,"text":"..","toolUses":2,"toolCalls":2,"rewarmMs":..}
//
// startEpochMs is the chat's start (its line read) on the wall clock, in
// ms since the epoch; finalTextMs is from then to the chat's first text
// delta (the tool-call turns carry no text, so that is the final text's),
// both measured with performance.now().
// On failure the line has "error" instead. It exits at the end of stdin.
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { createSdkMcpServer, startup, tool } from '@anthropic-ai/claude-agent-sdk';
import { z } from 'zod';

const cli = process.env.CLAUDEPOOL_CLI;
const cwd = process.env.BENCH_CWD || process.cwd();
const system = process.env.BENCH_SYSTEM || 'You are a test.';
if (!cli) {
  console.error('bench.mjs: CLAUDEPOOL_CLI must name the Claude Code CLI');
  process.exit(2);
}

// toolCalls counts the runs of the tool's handler in the current chat.
let toolCalls = 0;

// options are those of every chat: the pinned CLI, no built-in tools, the
// one in-process tool allowed without asking, no settings files or other
// MCP servers, nothing saved, text deltas streamed.
function options() {
  const add = tool('add', 'Adds two numbers.', { a: z.number(), b: z.number() }, async ({ a, b }) => {
    toolCalls++;
    return { content: [{ type: 'text', text: String(a + b) }] };
  });
  return {
    pathToClaudeCodeExecutable: cli,
    cwd,
    systemPrompt: system,
    tools: [],
    mcpServers: { bench: createSdkMcpServer({ name: 'bench', version: '1.0.0', tools: [add] }) },
    allowedTools: ['mcp__bench__add'],
    settingSources: [],
    strictMcpConfig: true,
    persistSession: false,
    includePartialMessages: true,
    stderr: (data) => process.stderr.write(data),
  };
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function warmUp() {
  const t = performance.now();
  const w = await startup({ options: options() });
  return { w, ms: performance.now() - t };
}

// chat runs one chat on the pre-warmed process w.
async function chat(w, text) {
  toolCalls = 0;
  const t0 = performance.now();
  const q = w.query(text);
  const out = { startEpochMs: performance.timeOrigin + t0, finalTextMs: 0, resultMs: 0, text: '', toolUses: 0, toolCalls: 0 };
  for await (const m of q) {
    if (m.type === 'stream_event') {
      const ev = m.event;
      if (!out.finalTextMs && ev.type === 'content_block_delta' && ev.delta?.type === 'text_delta' && ev.delta.text) {
        out.finalTextMs = performance.now() - t0;
      }
    } else if (m.type === 'assistant') {
      for (const b of m.message.content) {
        if (b.type === 'tool_use') out.toolUses++;
      }
    } else if (m.type === 'result') {
      out.resultMs = performance.now() - t0;
      if (m.subtype !== 'success' || m.is_error) {
        out.error = `result ${m.subtype}: ${JSON.stringify(m.errors ?? m.result)}`;
      } else {
        out.text = m.result;
      }
    }
  }
  out.toolCalls = toolCalls;
  if (!out.error && !out.finalTextMs) out.error = 'the chat ended without text';
  return out;
}

let warm;
try {
  const { w, ms } = await warmUp();
  warm = w;
  print({ ready: true, startupMs: ms });
} catch (e) {
  print({ error: `startup(): ${e?.stack ?? e}` });
  process.exit(1);
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  let out;
  const running = chat(warm, JSON.parse(line).text);
  // The next chat's process starts as this chat takes the pre-warmed one,
  // as a pool's refill replaces the spare a chat takes, and is ready
  // before the answer: the next chat finds it so.
  const next = warmUp();
  next.catch(() => {}); // awaited below, after the chat
  try {
    out = await running;
  } catch (e) {
    out = { error: String(e?.stack ?? e) };
  }
  try {
    const { w, ms } = await next;
    warm = w;
    out.rewarmMs = ms;
  } catch (e) {
    out.error = (out.error ? out.error + '; ' : '') + `startup(): ${e?.stack ?? e}`;
    warm = undefined;
  }
  print(out);
  if (!warm) break;
}
warm?.close();
