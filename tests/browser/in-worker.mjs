// A module worker that uses the package itself (which starts its own engine worker): the API
// works the same off the main thread. Answers { url, prompt, steps } with the greedy tokens.
import Hearth from '/pkg/index.js';

self.onmessage = async ({ data: { url, prompt, steps } }) => {
  try {
    const engine = await Hearth.load(url, { backend: 'webgpu', cache: false });
    const tokens = [];
    let text = '';
    for await (const t of engine.generate(prompt, { max_tokens: steps })) {
      tokens.push(t.token);
      text += t.text;
    }
    const { backend } = engine.info;
    engine.dispose();
    self.postMessage({ tokens, text, backend });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
