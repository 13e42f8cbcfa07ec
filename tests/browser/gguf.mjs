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

/**
 * `file` (a GGUF v3 buffer) with metadata `extra` set: strings, or integers (as u32); keys the
 * file has are replaced. Tensors are unchanged.
 */
export function withMetadata(file, extra) {
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
  at = 8;
  const nTensors = u64();
  const nKv = u64();
  let alignment = 32;
  const kept = [];
  for (let i = 0; i < nKv; i++) {
    const start = at;
    const key = str();
    const type = u32();
    if (key === 'general.alignment') alignment = file.readUInt32LE(at);
    skip(type);
    if (!(key in extra)) kept.push(file.subarray(start, at));
  }
  const kvEnd = at;
  for (let i = 0; i < nTensors; i++) {
    str();
    const dims = u32();
    at += 8 * dims + 4 + 8;
  }
  const infos = file.subarray(kvEnd, at);
  const dataStart = Math.ceil(at / alignment) * alignment;
  const added = [];
  const u64Buf = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
  const u32Buf = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
  const strBuf = (s) => { const b = Buffer.from(s, 'utf8'); return [u64Buf(b.length), b]; };
  for (const [k, v] of Object.entries(extra)) {
    if (typeof v === 'string') added.push(...strBuf(k), u32Buf(STRING), ...strBuf(v));
    else if (Number.isInteger(v)) added.push(...strBuf(k), u32Buf(U32), u32Buf(v));
    else throw new Error(`metadata ${k}: strings and integers only`);
  }
  const counts = Buffer.alloc(16);
  counts.writeBigUInt64LE(BigInt(nTensors), 0);
  counts.writeBigUInt64LE(BigInt(kept.length + Object.keys(extra).length), 8);
  const head = Buffer.concat([file.subarray(0, 8), counts, ...kept, ...added, infos]);
  const pad = Buffer.alloc((alignment - (head.length % alignment)) % alignment);
  return Buffer.concat([head, pad, file.subarray(dataStart)]);
}

/**
 * `file` (a GGUF v3 buffer) split as llama.cpp's gguf-split does: `parts` files, the first with
 * every metadata key, each with `split.no`, `split.count` and `split.tensors.count`, the
 * tensors dealt out in order.
 */
export function splitGguf(file, parts) {
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
  const nTensors = u64();
  const nKv = u64();
  const kvStart = at;
  let alignment = 32;
  for (let i = 0; i < nKv; i++) {
    const key = str();
    const type = u32();
    if (key === 'general.alignment') alignment = file.readUInt32LE(at);
    skip(type);
  }
  const kvs = file.subarray(kvStart, at);
  const tensors = [];
  for (let i = 0; i < nTensors; i++) {
    const name = str();
    const dims = Array.from({ length: u32() }, u64);
    tensors.push({ name, dims, type: u32(), offset: u64() });
  }
  const dataStart = Math.ceil(at / alignment) * alignment;
  const ends = tensors.map((t, i) => (i + 1 < tensors.length ? tensors[i + 1].offset : file.length - dataStart));
  const per = Math.ceil(tensors.length / parts);
  const b = (n, bytes, write) => { const x = Buffer.alloc(bytes); write(x, n); return x; };
  const key = (k, type, value) => {
    const name = Buffer.from(k, 'utf8');
    return Buffer.concat([b(name.length, 8, (x, n) => x.writeBigUInt64LE(BigInt(n))), name,
      b(type, 4, (x, n) => x.writeUInt32LE(n)), value]);
  };
  const out = [];
  for (let p = 0; p < parts; p++) {
    const mine = tensors.slice(p * per, (p + 1) * per);
    const split = [
      key('split.no', 2, b(p, 2, (x, n) => x.writeUInt16LE(n))),
      key('split.count', 2, b(parts, 2, (x, n) => x.writeUInt16LE(n))),
      key('split.tensors.count', 5, b(tensors.length, 4, (x, n) => x.writeInt32LE(n))),
    ];
    const infos = [];
    const data = [];
    let offset = 0;
    for (const t of mine) {
      const i = tensors.indexOf(t);
      const bytes = file.subarray(dataStart + t.offset, dataStart + t.offset + (ends[i] - t.offset));
      const name = Buffer.from(t.name, 'utf8');
      const info = Buffer.alloc(8 + name.length + 4 + 8 * t.dims.length + 4 + 8);
      let o = info.writeBigUInt64LE(BigInt(name.length));
      o += name.copy(info, o);
      o = info.writeUInt32LE(t.dims.length, o);
      for (const d of t.dims) o = info.writeBigUInt64LE(BigInt(d), o);
      o = info.writeUInt32LE(t.type, o);
      info.writeBigUInt64LE(BigInt(offset), o);
      infos.push(info);
      data.push(bytes, Buffer.alloc((alignment - (bytes.length % alignment)) % alignment));
      offset += Math.ceil(bytes.length / alignment) * alignment;
    }
    const counts = Buffer.alloc(16);
    counts.writeBigUInt64LE(BigInt(mine.length), 0);
    counts.writeBigUInt64LE(BigInt((p === 0 ? nKv : 0) + split.length), 8);
    const head = Buffer.concat([file.subarray(0, 8), counts, ...(p === 0 ? [kvs] : []), ...split, ...infos]);
    const pad = Buffer.alloc((alignment - (head.length % alignment)) % alignment);
    out.push(Buffer.concat([head, pad, ...data]));
  }
  return out;
}
