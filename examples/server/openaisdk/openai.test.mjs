// Drives examples/server's POST /v1/chat/completions with the official
// OpenAI TypeScript SDK, unchanged but for its base URL. openai_sdk_test.go
// starts the server over a pool of real CLI processes whose API is
// claudepooltest's mock (it answers "mock reply to: " and the last user
// text, a fixed JSON for structured output, and a call of the lookup tool
// when the text begins "Look up" and the request offers it, then "The
// tool said: " and the result), installs the pinned SDK and runs this
// file with `node --test`, with OPENAI_BASE_URL set, and OPENAI_TEST_TOOLS
// the server's -tools definitions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.OPENAI_BASE_URL;
assert.ok(baseURL, 'OPENAI_BASE_URL must point at the server');

// The one change a client makes: the base URL. The server ignores the key.
const client = new OpenAI({ baseURL, apiKey: 'sk-unused', maxRetries: 0, timeout: 60_000 });
const model = 'claude-sonnet-4-5';
const echo = (text) => `mock reply to: ${text}`;

test('chat.completions.create without streaming', async () => {
  const completion = await client.chat.completions.create({
    model,
    max_completion_tokens: 256,
    messages: [
      { role: 'system', content: 'You are the OpenAI SDK test pirate.' },
      { role: 'user', content: 'Hello from the OpenAI SDK' },
    ],
  });
  assert.equal(completion.object, 'chat.completion');
  assert.match(completion.id, /^chatcmpl-/);
  assert.ok(completion.model.startsWith(model), completion.model);
  assert.equal(completion.choices.length, 1);
  const [choice] = completion.choices;
  assert.equal(choice.finish_reason, 'stop');
  assert.equal(choice.message.role, 'assistant');
  assert.equal(choice.message.content, echo('Hello from the OpenAI SDK'));
  assert.equal(choice.message.refusal, null);
  assert.ok(completion.usage.prompt_tokens > 0, `prompt_tokens ${completion.usage.prompt_tokens}`);
  assert.ok(completion.usage.completion_tokens > 0, `completion_tokens ${completion.usage.completion_tokens}`);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
  assert.ok(completion._request_id, 'the request id header reaches the SDK');
});

test('streamed with include_usage: content chunks, the finish reason, then the usage', async () => {
  const stream = await client.chat.completions.create({
    model,
    max_tokens: 256,
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Stream this reply please' }] }],
  });
  const texts = [];
  const chunks = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    const delta = chunk.choices[0]?.delta;
    if (delta?.content) texts.push(delta.content);
  }
  assert.ok(texts.length > 1, `the reply came in ${texts.length} pieces`);
  assert.equal(texts.join(''), echo('Stream this reply please'), 'the deltas, in order, make the reply');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, [], 'the usage chunk has no choice');
  assert.ok(last.usage.prompt_tokens > 0, `prompt_tokens ${last.usage.prompt_tokens}`);
  assert.ok(last.usage.completion_tokens > 0, `completion_tokens ${last.usage.completion_tokens}`);
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
});

test('chat.completions.stream: the helper assembles the final completion', async () => {
  const deltas = [];
  const stream = client.chat.completions.stream({
    model,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'Assemble this reply please' }],
  });
  stream.on('content.delta', ({ delta }) => deltas.push(delta));
  const completion = await stream.finalChatCompletion();
  assert.ok(deltas.length > 1, `the reply came in ${deltas.length} pieces`);
  assert.equal(completion.choices[0].message.content, echo('Assemble this reply please'));
  assert.equal(completion.choices[0].finish_reason, 'stop');
  assert.ok(completion.usage.total_tokens > 0);
});

// A 1x1 PNG: enough for the server and the pool, which check that the
// bytes are what their media type says.
const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';

test('an image as a data URL', async () => {
  const completion = await client.chat.completions.create({
    model,
    messages: [{
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } },
        { type: 'text', text: 'What is in this OpenAI picture?' },
      ],
    }],
  });
  // openai_sdk_test.go checks the image at the mock.
  assert.equal(completion.choices[0].message.content, echo('What is in this OpenAI picture?'));
});

test('structured output: chat.completions.parse with a JSON schema', async () => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string' }, year: { type: 'integer' } },
    required: ['name', 'year'],
    additionalProperties: false,
  };
  const completion = await client.chat.completions.parse({
    model,
    messages: [{ role: 'user', content: 'Who wrote the first program, said the OpenAI SDK?' }],
    response_format: { type: 'json_schema', json_schema: { name: 'person', strict: true, schema } },
  });
  const { message } = completion.choices[0];
  assert.deepEqual(message.parsed, { name: 'Ada Lovelace', year: 1843 });
  assert.deepEqual(JSON.parse(message.content), { name: 'Ada Lovelace', year: 1843 });
});

// The server's tools (its -tools file): a request offers some of them as
// functions, with the server's input schemas as their parameters, and
// answers their calls.
const serverTools = JSON.parse(process.env.OPENAI_TEST_TOOLS);
const lookupDef = serverTools.find((t) => t.name === 'lookup');
const lookup = {
  type: 'function',
  function: { name: lookupDef.name, description: lookupDef.description, parameters: lookupDef.input_schema },
};

test('a tool call round trip: tool_calls out, a tool message in, the final answer', async () => {
  const messages = [{ role: 'user', content: 'Look up the weather, said the OpenAI SDK' }];
  const first = await client.chat.completions.create({ model, tools: [lookup], messages });
  const [choice] = first.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.content, 'Let me look that up.');
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'lookup', "the tool's own name");
  assert.match(call.id, /^toolu_/);
  assert.deepEqual(JSON.parse(call.function.arguments), { q: 'weather in Zürich <today>' });

  // The client runs the tool and sends back the message it received,
  // then the result: the server resumes the paused turn on its process.
  messages.push(choice.message);
  messages.push({ role: 'tool', tool_call_id: call.id, content: 'sunny, 21C' });
  const final = await client.chat.completions.create({ model, tools: [lookup], messages });
  assert.equal(final.choices[0].finish_reason, 'stop');
  assert.equal(final.choices[0].message.content, 'The tool said: sunny, 21C');
  assert.equal(final.choices[0].message.tool_calls, undefined);
});

test('runTools, streamed: the SDK runs the function and sends back its result', async () => {
  const seen = [];
  const runner = client.chat.completions.runTools({
    model,
    stream: true,
    messages: [{ role: 'user', content: 'Look up the weather, said the OpenAI runner' }],
    tools: [{
      type: 'function',
      function: {
        ...lookup.function,
        parse: JSON.parse,
        function: async (args) => {
          seen.push(args);
          return 'cloudy, 12C';
        },
      },
    }],
  });
  assert.equal(await runner.finalContent(), 'The tool said: cloudy, 12C');
  assert.deepEqual(seen, [{ q: 'weather in Zürich <today>' }]);
  const roles = runner.messages.map((m) => m.role);
  assert.deepEqual(roles, ['user', 'assistant', 'tool', 'assistant']);
});

test('a temperature over 1 is a 400 raised as BadRequestError, naming the field', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model,
      temperature: 1.5,
      messages: [{ role: 'user', content: 'Too hot for the OpenAI SDK' }],
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, 'temperature');
      assert.match(err.message, /temperature: must be at most 1 on this server, got 1\.5/);
      return true;
    },
  );
});

test('n over 1 is a 400 too: never ignored', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, n: 2, messages: [{ role: 'user', content: 'Twice, OpenAI SDK' }] }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.param, 'n');
      return true;
    },
  );
});
