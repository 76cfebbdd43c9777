#!/usr/bin/env python3
"""Generates the tokenizer fixtures of tests/data/tokenizer/ with Hugging Face `tokenizers`.
With --tiny V..., writes instead (stdlib only) small byte-level BPE tokenizers with exactly V ids
for the tiny test models (tests/data/tokenizer/tiny-V/tokenizer.json).

Trains a small byte-level BPE (Qwen2's exact normaliser, pre-tokenizer and decoder, plus the Qwen
added tokens) on built-in multilingual text and the Python stdlib sources, saves tokenizer.json,
and records HF's encodings and decodings of many hard strings in cases.jsonl (one JSON object a
line: text, hex (UTF-8 bytes), ids, decoded, decoded_skip). Run on a machine whose python has
`tokenizers`:  python3 scripts/gen_tokenizer_fixtures.py --out DIR
"""
import argparse
import glob
import json
import os
import random
import sys

import re
from collections import Counter

# MODEL.md section 8: the Qwen2 split regex.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
           "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
           "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
NON_SPECIAL = ["<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
               "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
               "</tool_response>", "<think>", "</think>"]

CORPUS = """
The quick brown fox jumps over the lazy dog. It's a sunny day; we'll go out, won't we?
I'M SURE THEY'VE SEEN IT. DON'T WORRY, YOU'LL BE FINE. She'd said he's right.
In 2024, the population was 8,123,456,789 and growing at 0.9% per year (approx.).
Der schnelle braune Fuchs springt über den faulen Hund. Größe, Straße, Äpfel, Öl, Übermut.
Le cœur a ses raisons que la raison ne connaît point. Où êtes-vous allés cet été ? Ça va.
El niño comió paella en la playa; ¿dónde está la biblioteca? ¡Qué día tan bonito!
Быстрая коричневая лиса прыгает через ленивую собаку. Съешь же ещё этих мягких булок.
Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ πιὰ στὸ χρυσαφὶ ξέφωτο. Ἀθῆναι.
我能吞下玻璃而不伤身体。今天天气很好，我们去公园散步吧。人工智能正在改变世界。
私はガラスを食べられます。それは私を傷つけません。東京は日本の首都です。カタカナ、ひらがな。
나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 대한민국의 수도는 서울입니다.
أنا قادر على أكل الزجاج و هذا لا يؤلمني. مرحبا بالعالم.
אני יכול לאכול זכוכית וזה לא מזיק לי. שָׁלוֹם עוֹלָם.
मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती. नमस्ते दुनिया। १२३४५
ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ สวัสดีชาวโลก
Tôi có thể ăn thủy tinh mà không hại gì. Xin chào thế giới. Tiếng Việt có dấu.
Mogę jeść szkło i mi nie szkodzi. Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.
Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇩🇪 🇯🇵 ❤️ 1️⃣ 🏳️‍🌈 🤖 — “quotes” ‘single’ «guillemets» …
def main(argv):\n    for i in range(10):\n        print(f"{i:>4}: {argv[i]!r}")\n\treturn 0\r\n
{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}  <div class="x">&amp;</div>
Math: ∑_{i=1}^{n} i² = n(n+1)/2, √2 ≈ 1.41421356, ∫₀^∞ e^{-x} dx = 1, α β γ δ ε, ½ ¾ Ⅻ.
"""


def corpus_iter():
    lines = CORPUS.strip().split("\n")
    for _ in range(60):  # repeat so the multilingual lines get merges of their own
        for ln in lines:
            yield ln.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
    # English prose and code: the Python standard library sources (about 3 MB).
    stdlib = os.path.dirname(os.__file__)
    total = 0
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue
        yield text
        total += len(text)
        if total > 3_000_000:
            break


def build_tokenizer(vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(corpus_iter(), trainer=trainer)
    # Added tokens after the trained vocabulary, as in Qwen (ids V_bpe .. V_bpe+25).
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False,
                                       rstrip=False, single_word=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False,
                               single_word=False) for t in NON_SPECIAL])
    return tok


HARD = [
    "", "Hello world", " Hello world", "Hello world!", "hello", " ", "  ", "   ", "a", "\n",
    "DON'T", "DON'T YOU'LL WE'RE I'M HE'S SHE'D THEY'VE", "don't you'll we're i'm he's she'd",
    "'s 'S 't 'T 're 'RE 've 'VE 'm 'M 'll 'LL 'd 'D", "it's", "O'Neil's", "'ſ 'ſt", "''s",
    "rock 'n' roll", "l'été", "Dont'", "'", "''",
    "a     b", "a \t b", "\t\tx", "x\t", "trailing   ", "   leading", "a  \n  b", "a\n\n\nb",
    "\n\n\n", "line1\r\nline2\r\n", "\r\n\r\n", "\r", "mixed \r\n \n\r \t\n", "x \n", "x  \n\n y",
    " \n", "\n ", "?\n\n", "!!!\r\n\r\n", "end.\n",
    "12345678901234567890", "3.14159", "1,000,000", "a1b2c3", "version 2.0.1-rc3", "0x1F_u32",
    "१२३४", "٠١٢٣", "Ⅻ ⅻ", "½ ¾ ⅞", "x² y³ H₂O", "①②③", "１２３",
    "我能吞下玻璃而不伤身体。", "私はガラスを食べられます。", "나는 유리를 먹을 수 있어요",
    "Быстрая коричневая лиса", "Γαζέες καὶ μυρτιὲς", "مرحبا بالعالم", "שָׁלוֹם עוֹלָם",
    "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu", "Zażółć gęślą jaźń", "İstanbul ıi",
    "Straße STRASSE ß ẞ", "ﬁ ﬂ ﬀ", "ＡＢＣ ａｂｃ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    # combining marks that NFC composes or reorders
    "e\u0301", "cafe\u0301", "A\u030a", "\u212b", "\u2126", "o\u0308\u0304", "a\u0323\u0302",
    "a\u0302\u0323", "\u1100\u1161\u11a8", "\u0301abc", " \u0301", "n\u0303o", "\u00c5\u0301",
    "\u0958", "\u0915\u093c", "\u1e9b\u0323", "q\u0307\u0323", "\u0344", "\u0340\u0341",
    # emoji
    "👍", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇩🇪🇫🇷", "1️⃣", "❤️", "😀😃😄",
    "hi 👋 there", "👩🏽\u200d💻 codes", "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    # spaces of other kinds
    "a\u00a0b", "a\u3000b", "a\u2028b", "a\u2029b", "a\u0085b", "a\u200bb", "a\u2009\u2009b",
    "\u00a0 x", "a\x0b\x0cb", "a\x1cb", "\x01\x02\x7f", "a\x00b", "\ufeffBOM",
    # special / added tokens inside text
    "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_end|><|im_start|>", "<|im_start", "<|im_start|", "im_start|>", "<<|im_end|>>",
    "x<|endoftext|>y", " <|im_end|> ", "<think>\nreason\n</think>\n\nanswer",
    "<tool_call>{\"a\": 1}</tool_call>", "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<|im_start|><|im_start|><|im_start|>", "e<|im_end|>\u0301", "<|IM_START|>", "<|vision_pad|>"*3,
    # code and markup
    "def main(argv):\n    for i in range(10):\n        print(i)\n\treturn 0\n",
    "if (x != y && z >= 0) { return -1; } // comment", "#include <stdio.h>\nint main(void){}",
    "{\"key\": \"value\", \"n\": [1, 2, 3]}", "<div class=\"x\">&amp;&lt;</div>",
    "https://example.com/path?q=1&r=two#frag", "user@example.org", "C:\\Windows\\System32",
    "$$\\frac{a}{b}$$", "----------", "==========", "...", "…", "—", "“quoted” ‘text’",
    "!!!???", " !!!", "a.b.c", "__init__", "snake_case_name", "CamelCaseName", "ALLCAPS",
    "HeLLo WoRLD", "x" * 300, "ab" * 200, " " * 100, "\n" * 50, "=" * 200, "9" * 120,
    "The quick brown fox jumps over the lazy dog. " * 8,
]

POOL = ("abcxyzABCXYZ0123456789 .,;:!?'\"-_()[]{}<>/\\@#$%^&*+=~`|\t\n\r"
        "   \u00a0\u3000\u0085éèêëçñßøå\u0301\u0308\u0323\u0302ΑαΩωЖжЯя中文字日本語한국어ة"
        "ب🙂👍🏽\u200d\u200b\ufe0f१२٣Ⅻ½ſ")
TOKENS_IN_POOL = ["<|im_start|>", "<|im_end|>", "<think>", "<|endoftext|>", "'s", "'LL", "\r\n"]


def random_strings(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.08:
                parts.append(rng.choice(TOKENS_IN_POOL))
            elif r < 0.3:
                parts.append(rng.choice(["the", "The", " and", "DON'T", "we're", " 42", "über"]))
            else:
                parts.append(rng.choice(POOL))
        out.append("".join(parts))
    return out


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (MODEL.md section 8)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) +
          list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tiny_tokenizer(n_vocab):
    """A byte-level BPE tokenizer.json with exactly n_vocab ids for the tiny test models (stdlib
    only, no `tokenizers`): ids 0..255 the bytes, then merges learnt by a plain BPE on the corpus,
    then <|im_start|> = V-3, <|endoftext|> = V-2 (bos/pad), <|im_end|> = V-1 (eos), matching the
    tiny models' generation_config.json. Same normaliser/pre-tokenizer/decoder as Qwen2."""
    b2u = bytes_to_unicode()
    n_merges = n_vocab - 256 - 3
    assert n_merges >= 0
    # training split: an ASCII approximation of the Qwen regex is enough to learn merges
    words = Counter()
    pat = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+|\d| ?[^\s\w]+|\s+")
    for text in corpus_iter():
        for w in pat.findall(text):
            words[tuple(w.encode("utf-8"))] += 1
    vocab = {bytes([b]): b for b in range(256)}
    seqs = {w: [bytes([b]) for b in w] for w in words}
    merges = []
    while len(merges) < n_merges:
        pairs = Counter()
        for w, c in words.items():
            sq = seqs[w]
            for a, b in zip(sq, sq[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        vocab[a + b] = len(vocab)
        for w in words:
            sq, out, i = seqs[w], [], 0
            while i < len(sq):
                if i + 1 < len(sq) and sq[i] == a and sq[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sq[i])
                    i += 1
            seqs[w] = out
    if len(vocab) < n_vocab - 3:  # ids must be dense: no padding with unused tokens
        raise SystemExit("corpus too small for %d merges" % n_merges)
    enc = lambda bs: "".join(b2u[x] for x in bs)
    added = [("<|im_start|>", n_vocab - 3), ("<|endoftext|>", n_vocab - 2),
             ("<|im_end|>", n_vocab - 1)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for t, i in added],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                           "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False,
                  "vocab": {enc(k): v for k, v in vocab.items()},
                  "merges": [[enc(a), enc(b)] for a, b in merges]},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=3000)
    ap.add_argument("--tiny", type=int, nargs="*", metavar="V",
                    help="instead: write <out>/tiny-V/tokenizer.json for each V (stdlib only)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.tiny:
        for v in args.tiny:
            d = os.path.join(args.out, "tiny-%d" % v)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(tiny_tokenizer(v), f, ensure_ascii=False, indent=1)
            print("tiny tokenizer", v, "->", d, flush=True)
        return 0
    import tokenizers
    from tokenizers import Tokenizer
    print("tokenizers", tokenizers.__version__, "python", sys.version.split()[0], flush=True)

    tok = build_tokenizer(args.vocab_size)
    path = os.path.join(args.out, "tokenizer.json")
    tok.save(path)
    # Reload from the file so the fixtures come from exactly what the C loader reads.
    tok = Tokenizer.from_file(path)
    print("vocab", tok.get_vocab_size(with_added_tokens=True), flush=True)

    cases = [("hard", s) for s in HARD] + [("random", s) for s in random_strings(300, 1234)]
    n_lossless = 0
    with open(os.path.join(args.out, "cases.jsonl"), "w", encoding="utf-8") as f:
        for kind, s in cases:
            enc = tok.encode(s)
            ids = enc.ids
            dec = tok.decode(ids, skip_special_tokens=False)
            dec_skip = tok.decode(ids, skip_special_tokens=True)
            norm = tok.normalizer.normalize_str(s)
            n_lossless += dec == norm
            rec = {"kind": kind, "text": s, "hex": s.encode("utf-8").hex(), "ids": ids,
                   "tokens": enc.tokens, "decoded_hex": dec.encode("utf-8").hex(),
                   "decoded_skip_hex": dec_skip.encode("utf-8").hex(),
                   "normalized_hex": norm.encode("utf-8").hex()}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print("cases", len(cases), "decode==normalized", n_lossless, flush=True)

    # A longer English text for a throughput cross-check (not committed when large).
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"tokenizers": tokenizers.__version__, "vocab": tok.get_vocab_size(True),
                   "cases": len(cases), "lossless": n_lossless,
                   "hello": tok.encode("Hello world").ids}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
