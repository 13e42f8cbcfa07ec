// What an app built with Vite does with the package: load a model, stream a chat reply.
import Hearth from 'hearth-llm';

const params = new URLSearchParams(location.search);
const out = document.getElementById('out');

async function run() {
  const engine = await Hearth.load(params.get('model'), { backend: params.get('backend') ?? 'auto', cache: false });
  const stream = await engine.chat.completions.create({
    messages: [{ role: 'user', content: params.get('say') ?? 'Hello there' }],
    stream: true,
    temperature: 0,
    max_tokens: Number(params.get('max') ?? 8),
  });
  let text = '';
  for await (const chunk of stream) {
    text += chunk.choices[0].delta.content ?? '';
    out.textContent = text;
  }
  const { backend } = engine.info;
  engine.dispose();
  return { text, backend };
}

run().then(
  (result) => { window.result = result; },
  (e) => { window.result = { error: `${e.code ?? ''} ${e.message}` }; },
);
