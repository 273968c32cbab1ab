// Drives examples/server's POST /v1/messages with the official TypeScript
// SDK, unchanged but for its base URL. sdk_test.go starts the server over a
// pool of real CLI processes whose API is claudepooltest's mock (it answers
// "mock reply to: " and the last user text, after a thinking block when
// that text begins "Think first", a fixed JSON for structured output, and
// a call of the lookup tool when the text begins "Look up" and the request
// offers it), installs the pinned SDK and runs this file with `node
// --test`, with ANTHROPIC_BASE_URL set, ANTHROPIC_API_KEY one of the
// server's -client-keys, and SDK_TEST_TOOLS the server's -tools
// definitions. The server lists the models claude-sonnet-4-5 and
// claude-haiku-4-5 (-models), and counts tokens with the mock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { jsonSchemaOutputFormat } from '@anthropic-ai/sdk/helpers/json-schema';

const baseURL = process.env.ANTHROPIC_BASE_URL;
assert.ok(baseURL, 'ANTHROPIC_BASE_URL must point at the server');

// The one change a client makes: the base URL; and the key is one of the
// server's (-client-keys), which the SDK sends as Authorization: Bearer.
const apiKey = process.env.ANTHROPIC_API_KEY;
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const model = 'claude-sonnet-4-5';

test('messages.create without streaming', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 256,
    messages: [{ role: 'user', content: 'Hello from the SDK' }],
  });
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.match(msg.id, /^msg_/);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(msg.content.length, 1);
  assert.equal(msg.content[0].type, 'text');
  assert.equal(msg.content[0].text, 'mock reply to: Hello from the SDK');
  assert.ok(msg.usage.input_tokens > 0, `input_tokens ${msg.usage.input_tokens}`);
  assert.ok(msg.usage.output_tokens > 0, `output_tokens ${msg.usage.output_tokens}`);
  assert.ok(msg._request_id, 'the request id header reaches the SDK');
});

test('messages.stream: text in order, finalMessage with usage', async () => {
  const texts = [];
  const events = [];
  const stream = client.messages.stream({
    model,
    max_tokens: 256,
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Stream this reply please' }] }],
  });
  stream.on('text', (delta) => texts.push(delta));
  stream.on('streamEvent', (ev) => events.push(ev.type));
  const msg = await stream.finalMessage();
  const want = 'mock reply to: Stream this reply please';
  assert.ok(texts.length > 1, `the reply came in ${texts.length} pieces`);
  assert.equal(texts.join(''), want, 'the deltas, in order, make the reply');
  assert.equal(msg.content[0].text, want);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.ok(msg.usage.input_tokens > 0, `input_tokens ${msg.usage.input_tokens}`);
  assert.ok(msg.usage.output_tokens > 0, `output_tokens ${msg.usage.output_tokens}`);
  assert.equal(events[0], 'message_start');
  assert.equal(events[1], 'content_block_start');
  assert.equal(events.at(-3), 'content_block_stop');
  assert.equal(events.at(-2), 'message_delta');
  assert.equal(events.at(-1), 'message_stop');
});

test('stop_sequences: the reply stops there, message_start carries the input tokens', async () => {
  let startUsage;
  const stream = client.messages.stream({
    model,
    max_tokens: 256,
    stop_sequences: ['reply'],
    messages: [{ role: 'user', content: 'Stop early please' }],
  });
  stream.on('streamEvent', (ev) => {
    if (ev.type === 'message_start') startUsage = ev.message.usage;
  });
  const msg = await stream.finalMessage();
  assert.equal(msg.content[0].text, 'mock ', 'cut before the stop sequence');
  assert.equal(msg.stop_reason, 'stop_sequence');
  assert.equal(msg.stop_sequence, 'reply');
  assert.ok(startUsage?.input_tokens > 0, `message_start input_tokens ${startUsage?.input_tokens}`);
});

test('multi-turn request', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 256,
    messages: [
      { role: 'user', content: 'My name is Ada.' },
      { role: 'assistant', content: [{ type: 'text', text: 'Nice to meet you, Ada.' }] },
      { role: 'user', content: 'What is my name?' },
    ],
  });
  // The mock echoes the one user message the CLI sent: the conversation,
  // rendered by the pool.
  const text = msg.content[0].text;
  assert.ok(text.startsWith('mock reply to: '), text);
  for (const part of ['My name is Ada.', 'Nice to meet you, Ada.', 'What is my name?']) {
    assert.ok(text.includes(part), `reply lacks ${JSON.stringify(part)}: ${text}`);
  }
});

test('system prompt', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 256,
    system: 'You are the SDK test pirate.',
    messages: [{ role: 'user', content: 'Ahoy' }],
  });
  // sdk_test.go checks that the system prompt reached the mock API.
  assert.equal(msg.content[0].text, 'mock reply to: Ahoy');
});

// A 1x1 PNG and the start of a PDF: enough for the server and the pool,
// which check that the bytes are what their media type says.
const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const pdf = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n').toString('base64');

test('an image and documents', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 256,
    messages: [{
      role: 'user',
      content: [
        { type: 'image', source: { type: 'base64', media_type: 'image/png', data: png } },
        { type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: pdf }, title: 'SDK report' },
        { type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'SDK plain notes' }, title: 'SDK notes' },
        { type: 'text', text: 'What is in these attachments?' },
      ],
    }],
  });
  // sdk_test.go checks the blocks at the mock.
  assert.equal(msg.content.length, 1);
  assert.equal(msg.content[0].text, 'mock reply to: What is in these attachments?');
});

test('a malformed image is a 400 raised as BadRequestError', async () => {
  await assert.rejects(
    client.messages.create({
      model,
      max_tokens: 256,
      messages: [{
        role: 'user',
        content: [
          { type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: png } },
          { type: 'text', text: 'What is in this picture?' },
        ],
      }],
    }),
    (err) => {
      assert.ok(err instanceof Anthropic.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.error?.error?.type, 'invalid_request_error');
      assert.match(err.error?.error?.message, /image\/png, not image\/jpeg/);
      return true;
    },
  );
});

// The mock begins its reply with a thinking block when the user text asks
// for it (sdk_test.go).
const thought = 'The SDK asks; think first.';

test('thinking without streaming', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 2048,
    thinking: { type: 'enabled', budget_tokens: 1024 },
    messages: [{ role: 'user', content: 'Think first, then answer' }],
  });
  assert.equal(msg.content.length, 2);
  assert.equal(msg.content[0].type, 'thinking');
  assert.equal(msg.content[0].thinking, thought);
  assert.ok(msg.content[0].signature, 'the thinking block is signed');
  assert.equal(msg.content[1].type, 'text');
  assert.equal(msg.content[1].text, 'mock reply to: Think first, then answer');
});

test('thinking streamed: thinking events, then text', async () => {
  const thinking = [];
  const texts = [];
  const signatures = [];
  const starts = [];
  const order = [];
  const stream = client.messages.stream({
    model,
    max_tokens: 256,
    thinking: { type: 'adaptive' },
    messages: [{ role: 'user', content: 'Think first, streamed' }],
  });
  stream.on('thinking', (delta) => { thinking.push(delta); order.push('thinking'); });
  stream.on('signature', (sig) => { signatures.push(sig); order.push('signature'); });
  stream.on('text', (delta) => { texts.push(delta); order.push('text'); });
  stream.on('streamEvent', (ev) => {
    if (ev.type === 'content_block_start') starts.push([ev.index, ev.content_block.type]);
  });
  const msg = await stream.finalMessage();
  assert.deepEqual(starts, [[0, 'thinking'], [1, 'text']]);
  assert.match(order.join(' '), /^(thinking )+signature( text)+$/, 'thinking, its signature, then the text');
  assert.ok(thinking.length > 1, `the thinking came in ${thinking.length} pieces`);
  assert.equal(thinking.join(''), thought);
  assert.equal(signatures.length, 1);
  assert.equal(texts.join(''), 'mock reply to: Think first, streamed');
  assert.deepEqual(msg.content.map((b) => b.type), ['thinking', 'text']);
  assert.equal(msg.content[0].thinking, thought);
  assert.equal(msg.content[0].signature, signatures[0]);
  assert.equal(msg.content[1].text, 'mock reply to: Think first, streamed');
});

test('thinking not asked for: the text alone', async () => {
  const msg = await client.messages.create({
    model,
    max_tokens: 256,
    messages: [{ role: 'user', content: 'Think first, unasked' }],
  });
  assert.deepEqual(msg.content, [{ type: 'text', text: 'mock reply to: Think first, unasked' }]);
});

test('structured output: messages.parse with a JSON schema', async () => {
  const schema = {
    type: 'object',
    properties: { name: { type: 'string' }, year: { type: 'integer' } },
    required: ['name', 'year'],
    additionalProperties: false,
  };
  const msg = await client.messages.parse({
    model,
    max_tokens: 256,
    messages: [{ role: 'user', content: 'Who wrote the first program?' }],
    output_config: { format: jsonSchemaOutputFormat(schema) },
  });
  assert.deepEqual(msg.parsed_output, { name: 'Ada Lovelace', year: 1843 });
  assert.deepEqual(JSON.parse(msg.content[0].text), { name: 'Ada Lovelace', year: 1843 });
});

// The server's tools (its -tools file): a request offers some of them, as
// the server defines them, and answers their calls.
const serverTools = JSON.parse(process.env.SDK_TEST_TOOLS);
const lookup = serverTools.find((t) => t.name === 'lookup');

for (const streamed of [false, true]) {
  const how = streamed ? 'streamed' : 'not streamed';
  test(`a tool-use loop, ${how}: tool_use out, tool_result in, the final answer`, async () => {
    const messages = [{ role: 'user', content: `Look up the weather, ${how}` }];
    const ask = async () => {
      const params = { model, max_tokens: 256, tools: [lookup], tool_choice: { type: 'auto' }, messages: [...messages] };
      if (!streamed) return { msg: await client.messages.create(params) };
      const starts = [];
      const inputJSON = [];
      const stream = client.messages.stream(params);
      stream.on('streamEvent', (ev) => {
        if (ev.type === 'content_block_start') starts.push([ev.index, ev.content_block.type]);
      });
      stream.on('inputJson', (delta) => inputJSON.push(delta));
      return { msg: await stream.finalMessage(), starts, inputJSON };
    };

    const first = await ask();
    assert.equal(first.msg.stop_reason, 'tool_use');
    assert.deepEqual(first.msg.content.map((b) => b.type), ['text', 'tool_use']);
    assert.equal(first.msg.content[0].text, 'Let me look that up.');
    const call = first.msg.content[1];
    assert.equal(call.name, 'lookup', "the tool's own name");
    assert.match(call.id, /^toolu_/);
    assert.deepEqual(call.input, { q: 'weather in Zürich <today>' });
    if (streamed) {
      assert.deepEqual(first.starts, [[0, 'text'], [1, 'tool_use']]);
      assert.ok(first.inputJSON.length > 1, `the input came in ${first.inputJSON.length} pieces`);
      assert.deepEqual(JSON.parse(first.inputJSON.join('')), call.input);
    }

    // The client runs the tool and sends back what it received, then the
    // result: the server resumes the paused turn on its process.
    messages.push({ role: 'assistant', content: first.msg.content });
    messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'sunny, 21C' }] });
    const final = await ask();
    assert.equal(final.msg.stop_reason, 'end_turn');
    assert.deepEqual(final.msg.content, [{ type: 'text', text: 'The tool said: sunny, 21C' }]);
  });
}

test('a tool other than the server\'s is a 400 raised as BadRequestError', async () => {
  await assert.rejects(
    client.messages.create({
      model,
      max_tokens: 256,
      tools: [{ name: 'get_time', description: 'Tells the time.', input_schema: { type: 'object' } }],
      messages: [{ role: 'user', content: 'What time is it?' }],
    }),
    (err) => {
      assert.ok(err instanceof Anthropic.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.error?.error?.message, /offers only the tools it was started with \(lookup, add\)/);
      return true;
    },
  );
});

test('messages.countTokens: counted by the API, the beta header passed on', async () => {
  const count = await client.messages.countTokens(
    {
      model,
      system: 'Count this too.',
      messages: [{ role: 'user', content: 'How many tokens is this?' }],
    },
    { headers: { 'anthropic-beta': 'sdk-test-beta' } },
  );
  // sdk_test.go checks what reached the mock.
  assert.ok(Number.isInteger(count.input_tokens) && count.input_tokens > 0, `input_tokens ${count.input_tokens}`);
});

test('messages.countTokens of a request the server would refuse is a 400', async () => {
  await assert.rejects(
    client.messages.countTokens({
      model,
      tools: [{ name: 'get_time', description: 'Tells the time.', input_schema: { type: 'object' } }],
      messages: [{ role: 'user', content: 'What time is it?' }],
    }),
    (err) => {
      assert.ok(err instanceof Anthropic.BadRequestError, `got ${err?.constructor?.name}: ${err}`);
      assert.match(err.error?.error?.message, /not one of this server's tools/);
      return true;
    },
  );
});

test('models.list pages through the server\'s models; models.retrieve', async () => {
  const models = [];
  for await (const m of client.models.list({ limit: 1 })) models.push(m);
  assert.deepEqual(models.map((m) => m.id), ['claude-sonnet-4-5', 'claude-haiku-4-5']);
  const page = await client.models.list();
  assert.equal(page.has_more, false);
  assert.equal(page.first_id, 'claude-sonnet-4-5');
  assert.equal(page.last_id, 'claude-haiku-4-5');

  const m = await client.models.retrieve('claude-haiku-4-5');
  assert.equal(m.type, 'model');
  assert.equal(m.id, 'claude-haiku-4-5');
  assert.equal(m.display_name, 'Claude Haiku 4.5');
  assert.ok(!Number.isNaN(Date.parse(m.created_at)), `created_at ${m.created_at}`);
  await assert.rejects(client.models.retrieve('claude-unknown-9'), (err) => {
    assert.ok(err instanceof Anthropic.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.error?.error?.type, 'not_found_error');
    return true;
  });
});

test('an unknown path is a NotFoundError with the request id', async () => {
  await assert.rejects(client.get('/v1/no-such-endpoint'), (err) => {
    assert.ok(err instanceof Anthropic.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 404);
    assert.equal(err.error?.type, 'error');
    assert.equal(err.error?.error?.type, 'not_found_error');
    assert.ok(err.requestID, 'the request-id header reaches the SDK');
    assert.equal(err.error?.request_id, err.requestID);
    return true;
  });
});

const hello = { model, max_tokens: 256, messages: [{ role: 'user', content: 'Hello without a key' }] };

test('a request without a key is an AuthenticationError', async () => {
  await assert.rejects(client.messages.create(hello, { headers: { Authorization: null } }), (err) => {
    assert.ok(err instanceof Anthropic.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 401);
    assert.equal(err.error?.error?.type, 'authentication_error');
    assert.equal(err.error?.error?.message, 'x-api-key header is required');
    assert.ok(err.requestID);
    return true;
  });
});

test('a wrong key is an AuthenticationError, on every endpoint', async () => {
  const wrong = new Anthropic({ baseURL, apiKey: 'sk-sdk-wrong', maxRetries: 0, timeout: 60_000 });
  for (const call of [() => wrong.messages.create(hello), () => wrong.models.list(), () => wrong.messages.countTokens({ model, messages: hello.messages })]) {
    await assert.rejects(call(), (err) => {
      assert.ok(err instanceof Anthropic.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.error?.error?.message, 'invalid x-api-key');
      assert.ok(err.requestID);
      return true;
    });
  }
});
