// Minimal GGUF v3 writer for the error-path fixtures (headers with chosen metadata and tensor
// types; tensor data is zeros), and a metadata editor for real fixture models.

const U32 = 4, F32 = 6, STRING = 8;

export function gguf(metadata, tensors) {
  const parts = [];
  const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
  const str = (s) => { const b = Buffer.from(s, 'utf8'); u64(b.length); parts.push(b); };
  parts.push(Buffer.from('GGUF'));
  u32(3);
  u64(tensors.length);
  u64(Object.keys(metadata).length);
  for (const [k, v] of Object.entries(metadata)) {
    str(k);
    if (typeof v === 'string') { u32(STRING); str(v); }
    else if (Number.isInteger(v)) { u32(U32); u32(v); }
    else { u32(F32); const b = Buffer.alloc(4); b.writeFloatLE(v); parts.push(b); }
  }
  let offset = 0;
  for (const t of tensors) {
    str(t.name);
    u32(t.dims.length);
    t.dims.forEach(u64);
    u32(t.type);
    u64(offset);
    offset += Math.ceil(t.bytes / 32) * 32;
  }
  let head = Buffer.concat(parts);
  const pad = (32 - (head.length % 32)) % 32;
  return Buffer.concat([head, Buffer.alloc(pad), Buffer.alloc(offset)]);
}

/** A llama header whose weight matrices have type `type` (bytes per 256 values: `per256`). */
export function llamaWithType(type, per256) {
  const e = 256, v = 32, ff = 256;
  const m = (name, dims) => ({ name, dims, type, bytes: (dims[0] * dims[1] / 256) * per256 });
  const norm = (name) => ({ name, dims: [e], type: 0, bytes: e * 4 });
  return gguf(
    {
      'general.architecture': 'llama',
      'llama.embedding_length': e,
      'llama.feed_forward_length': ff,
      'llama.block_count': 1,
      'llama.context_length': 64,
      'llama.attention.head_count': 4,
      'llama.attention.layer_norm_rms_epsilon': 1e-5,
    },
    [
      m('token_embd.weight', [e, v]),
      norm('output_norm.weight'),
      m('output.weight', [e, v]),
      norm('blk.0.attn_norm.weight'),
      m('blk.0.attn_q.weight', [e, e]),
      m('blk.0.attn_k.weight', [e, e]),
      m('blk.0.attn_v.weight', [e, e]),
      m('blk.0.attn_output.weight', [e, e]),
      norm('blk.0.ffn_norm.weight'),
      m('blk.0.ffn_gate.weight', [e, ff]),
      m('blk.0.ffn_up.weight', [e, ff]),
      m('blk.0.ffn_down.weight', [ff, e]),
    ],
  );
}

const SIZES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** The parts of a GGUF v3 buffer's header: each metadata entry's bytes (by key), the tensor
 * infos, where tensor data starts, and the alignment. */
function readHeader(file) {
  let at = 8;
  const u32 = () => { const v = file.readUInt32LE(at); at += 4; return v; };
  const u64 = () => { const v = Number(file.readBigUInt64LE(at)); at += 8; return v; };
  const str = () => { const n = u64(); const s = file.toString('utf8', at, at + n); at += n; return s; };
  const skip = (type) => {
    if (type === STRING) str();
    else if (type === 9) { const t = u32(); const n = u64(); for (let i = 0; i < n; i++) skip(t); }
    else if (SIZES[type]) at += SIZES[type];
    else throw new Error(`GGUF value type ${type}`);
  };
  if (file.toString('latin1', 0, 4) !== 'GGUF' || file.readUInt32LE(4) !== 3) throw new Error('not GGUF v3');
  const nTensors = u64();
  const nKv = u64();
  let alignment = 32;
  const entries = [];
  for (let i = 0; i < nKv; i++) {
    const start = at;
    const key = str();
    const type = u32();
    if (key === 'general.alignment') alignment = file.readUInt32LE(at);
    skip(type);
    entries.push({ key, bytes: file.subarray(start, at) });
  }
  const tensors = [];
  for (let i = 0; i < nTensors; i++) {
    const start = at;
    const name = str();
    const dims = Array.from({ length: u32() }, u64);
    tensors.push({ name, dims, type: u32(), offset: u64(), info: file.subarray(start, at) });
  }
  return { entries, tensors, alignment, dataStart: Math.ceil(at / alignment) * alignment };
}

const u16Buf = (v) => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };
const u32Buf = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const u64Buf = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
const strBuf = (s) => { const b = Buffer.from(s, 'utf8'); return Buffer.concat([u64Buf(b.length), b]); };
const entry = (key, type, value) => Buffer.concat([strBuf(key), u32Buf(type), value]);

/** A GGUF v3 file of `entries` (metadata bytes), tensor `infos`, and tensor `data`. */
function assemble(entries, infos, data, alignment) {
  const head = Buffer.concat([Buffer.from('GGUF'), u32Buf(3), u64Buf(infos.length), u64Buf(entries.length),
    ...entries, ...infos]);
  return Buffer.concat([head, Buffer.alloc((alignment - (head.length % alignment)) % alignment), data]);
}

/**
 * `file` (a GGUF v3 buffer) with metadata `extra` set: strings, or integers (as u32); keys the
 * file has are replaced. Tensors are unchanged.
 */
export function withMetadata(file, extra) {
  const h = readHeader(file);
  const added = Object.entries(extra).map(([k, v]) => {
    if (typeof v === 'string') return entry(k, STRING, strBuf(v));
    if (Number.isInteger(v)) return entry(k, U32, u32Buf(v));
    throw new Error(`metadata ${k}: strings and integers only`);
  });
  const kept = h.entries.filter((e) => !(e.key in extra)).map((e) => e.bytes);
  return assemble([...kept, ...added], h.tensors.map((t) => t.info), file.subarray(h.dataStart), h.alignment);
}

/** A small chat template that writes BOS itself, for fixtures that have none. */
const CHAT_TEMPLATE = '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}\n{% endfor %}'
  + '{% if add_generation_prompt %}<|assistant|>\n{% endif %}';

/** `file` (a GGUF v3 buffer) given the tests' small chat template. */
export function withChatTemplate(file) {
  return withMetadata(file, { 'tokenizer.chat_template': CHAT_TEMPLATE });
}

/**
 * `file` (a GGUF v3 buffer) split as llama.cpp's gguf-split does: `parts` files, the first with
 * every metadata key, each with `split.no`, `split.count` and `split.tensors.count`, the
 * tensors dealt out in order.
 */
export function splitGguf(file, parts) {
  const h = readHeader(file);
  const { tensors, alignment } = h;
  const per = Math.ceil(tensors.length / parts);
  return Array.from({ length: parts }, (_, p) => {
    const mine = tensors.slice(p * per, (p + 1) * per);
    const split = [
      entry('split.no', 2, u16Buf(p)),
      entry('split.count', 2, u16Buf(parts)),
      entry('split.tensors.count', 5, u32Buf(tensors.length)),
    ];
    const infos = [];
    const data = [];
    let offset = 0;
    for (const t of mine) {
      const i = tensors.indexOf(t);
      const end = i + 1 < tensors.length ? tensors[i + 1].offset : file.length - h.dataStart;
      // Each tensor's bytes run to the next one's (its padding included): still aligned.
      const bytes = file.subarray(h.dataStart + t.offset, h.dataStart + end);
      infos.push(Buffer.concat([strBuf(t.name), u32Buf(t.dims.length), ...t.dims.map(u64Buf), u32Buf(t.type), u64Buf(offset)]));
      data.push(bytes);
      offset += bytes.length;
    }
    const entries = [...(p === 0 ? h.entries.map((e) => e.bytes) : []), ...split];
    return assemble(entries, infos, Buffer.concat(data), alignment);
  });
}
