// Numbers as the page shows them. Sizes are decimal (MB = 10^6 bytes), as the Hugging Face Hub
// states them.

export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return '—';
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do { v /= 1000; i++; } while (v >= 1000 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

/** A parameter count: 151872 -> "152K", 494032768 -> "494M". */
export function count(n) {
  if (n == null || !Number.isFinite(n)) return '—';
  for (const [size, unit] of [[1e9, 'B'], [1e6, 'M'], [1e3, 'K']]) {
    if (n >= size) {
      const v = n / size;
      return `${v < 10 ? v.toFixed(1) : v.toFixed(0)}${unit}`;
    }
  }
  return String(n);
}

/** Tokens per second, or a dash when there is too little to measure. */
export function rate(tokens, ms) {
  if (!(tokens > 0) || !(ms > 0)) return '—';
  const r = (tokens * 1000) / ms;
  return `${r < 10 ? r.toFixed(1) : r.toFixed(0)} tok/s`;
}

export function seconds(ms) {
  return ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 1000)} s`;
}

/** The last part of a URL's path, for labels: ".../resolve/main/model.gguf" -> "model.gguf". */
export function fileName(url) {
  let path = url;
  try {
    path = new URL(url).pathname;
  } catch {
    // Not an absolute URL: its own last part.
  }
  const last = path.split('/').pop();
  try {
    return decodeURIComponent(last) || url;
  } catch {
    return last || url; // malformed %-escapes: shown as they are
  }
}
