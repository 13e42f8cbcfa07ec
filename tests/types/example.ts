// Compiled with `tsc --noEmit` (check.sh): the official openai client's request and response
// types and the package's own declarations must agree, so that code written against OpenAI's
// API runs against Hearth unchanged.

import type OpenAI from 'openai';
import { Hearth, type ChatCompletionRequest } from '../../pkg/index.js';

const tools: OpenAI.Chat.ChatCompletionFunctionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Weather in a city.',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];

// Requests written for OpenAI's client are Hearth requests.
const structured: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming = {
  model: 'local',
  messages: [{ role: 'user', content: 'A listing as JSON' }],
  response_format: {
    type: 'json_schema',
    json_schema: { name: 'listing', schema: { type: 'object' }, strict: true },
  },
  max_tokens: 64,
  seed: 1,
};
const calling: OpenAI.Chat.ChatCompletionCreateParamsStreaming = {
  model: 'local',
  messages: [
    { role: 'user', content: 'Weather in Oslo?' },
    {
      role: 'assistant',
      content: null,
      tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Oslo"}' } }],
    },
    { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 3}' },
  ],
  tools,
  tool_choice: { type: 'function', function: { name: 'get_weather' } },
  parallel_tool_calls: false,
  stream: true,
};
const asHearth: ChatCompletionRequest[] = [structured, calling];

export async function run(engine: Hearth): Promise<void> {
  // The engine's events carry typed details.
  engine.addEventListener('restored', (e) => console.log(e.detail.info.backend, e.detail.info.fallbackReason));
  engine.addEventListener('restorefailed', (e) => console.log(e.detail.error.code));
  engine.addEventListener('devicelost', (e) => console.log(e.detail.message.length));
  // Hearth's responses are OpenAI's response types.
  const ours = await engine.chat.completions.create({ ...structured, stream: false });
  const reply: OpenAI.Chat.ChatCompletion = ours;
  const message: OpenAI.Chat.ChatCompletionMessageParam = ours.choices[0].message;
  for (const call of ours.choices[0].message.tool_calls ?? []) {
    const same: OpenAI.Chat.ChatCompletionMessageFunctionToolCall = call;
    console.log(same.function.name, JSON.parse(call.function.arguments), message.role, reply.id);
  }
  const stream = await engine.chat.completions.create({ ...calling, stream: true });
  for await (const chunk of stream) {
    const same: OpenAI.Chat.ChatCompletionChunk = chunk;
    for (const delta of same.choices[0]?.delta.tool_calls ?? []) console.log(delta.index, delta.function?.arguments);
  }
  console.log(asHearth.length);
}
