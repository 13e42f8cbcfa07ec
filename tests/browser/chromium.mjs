// The Chromium every browser test drives: the system's, headless, WebGPU on (SwiftShader where
// there is no GPU), nothing in the background that reaches the network.
import { chromium } from 'playwright-core';

export const FLAGS = ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

/** A browser launched with `args`. */
export function launch(args = FLAGS) {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args });
}

/**
 * A new page of `browser` on tests/browser/page.html served from `appUrl`, once the package has
 * loaded there; with `logErrors`, the page's console errors are printed.
 */
export async function testPage(browser, appUrl, { logErrors = false } = {}) {
  const page = await browser.newPage();
  if (logErrors) page.on('console', (m) => { if (m.type() === 'error') console.error('[page]', m.text()); });
  await page.goto(`${appUrl}/tests/browser/page.html`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

/**
 * Loads `url` in `page` with `options` (Hearth.load's), takes the greedy tokens after `prompt`
 * (`maxTokens` of them), and disposes of the engine: the token ids.
 */
export function greedyTokens(page, url, options, prompt = 'Hello', maxTokens = 4) {
  return page.evaluate(async ({ url, options, prompt, maxTokens }) => {
    const engine = await window.Hearth.load(url, options);
    const tokens = [];
    for await (const t of engine.generate(prompt, { max_tokens: maxTokens })) tokens.push(t.token);
    engine.dispose();
    return tokens;
  }, { url, options, prompt, maxTokens });
}
