#!/usr/bin/env python3
"""Tokenizer test corpus and reference outputs.

Three jobs:

  probe   Records how the reference's Unicode tables classify and normalise every code point
          (unicode_probe.json, committed; unicode_probe_nfd.json, NFC of this Python's NFD of
          every decomposable character), and references for extra texts (texts.jsonl; the
          committed fuzz_marks.jsonl holds those for the combining marks added after Unicode
          9.0, per ICU's u_charAge).

  corpus  Writes tests/fixtures/tokenizer/corpus.jsonl: one JSON string per line, hand-written
          hard cases plus systematically generated ones (every ASCII control character, runs of
          spaces, numbers of many lengths, NFC/NFD pairs, ...). Deterministic.

  refs    Runs the reference implementations over the corpus and writes, into --out:
            expected.jsonl   one record per corpus line (same order): ids and decoded text for
                             GPT-NeoX (HF `tokenizers`), Mistral v3 and v1 (`sentencepiece`)
            decode_cases.json  id lists with their reference decodes (split UTF-8 characters,
                             special tokens shown and skipped, byte pieces, dummy-prefix space)
            fuzz.jsonl, fuzz_unicode.jsonl, fuzz_mix.jsonl
                             random texts (fixed seeds) with their text and the same fields:
                             hard characters and fragments, random code points from all
                             planes, and corpus texts joined together
            info.json        library versions and vocabulary facts
            bench.json       with --bench-text: id count and hash for a large text

Requires `tokenizers` and `sentencepiece` (refs only). Example:

  python3 scripts/make_tokenizer_refs.py corpus --out tests/fixtures/tokenizer/corpus.jsonl
  python3 scripts/make_tokenizer_refs.py refs --corpus tests/fixtures/tokenizer/corpus.jsonl \
      --neox gpt-neox-20b.tokenizer.json --spm mistral-v3.tokenizer.model \
      --spm-v1 mistral-v1.tokenizer.model --out OUTDIR
"""

import argparse
import json
import os
import random
import sys
import unicodedata

# ------------------------------------------------------------------------------------------
# corpus


def hand_written():
    t = []
    # empty and tiny
    t += ["", " ", "  ", "\n", "\t", "\r\n", "a", "A", ".", "'", "0"]
    # leading / trailing whitespace
    t += [" hello", "  hello", "   hello", "hello ", "hello  ", " hello ", "\thello", "hello\t",
          "\nhello", "hello\n", "hello\n\n", " \n hello", "\n \n\n \n\n\n \t \t\t \t\n  \n   \n"]
    # whitespace mixes
    t += ["a\tb", "a \tb", "a\t b", "a\t\tb", "a \t b", "a\n\nb", "a \n b", "a\n b", "a \nb",
          "line1\r\nline2\r\n", "a\r\rb", "\t\t\t", "\n\n\n\n", " \t\n\r\u000b\u000c",
          "x\u0085y", "a\u00a0b", "a\u00a0\u00a0b", "\u3000\u3000text", "a\u2028b", "a\u2029b",
          "a\u2009b", "a\u200bb", "a\u202fb", "a\u1680b", "a\u205fb", "a\u180eb", "tab\tand  two",
          "end with spaces   ", "    indented four", "\t\tindented tabs", "mixed \t \t \t end"]
    # contractions, all cases
    t += ["I'm here", "you're", "we've", "they'll", "she'd", "it's", "I'M", "YOU'RE", "WE'VE",
          "THEY'LL", "SHE'D", "IT'S", "'S", "'LL", "'Re", "'rE", "'Ve", "'D", "'M", "don't",
          "DON'T", "''s", "'''", "'s's's", "rock 'n' roll", "it\u2019s curly", "I've been 'told he's "
          "there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
          "'sup", "'tis", "o'clock", "' s", "'", "''"]
    # numbers
    t += ["3.14159", "1,000,000", "2024-01-01T12:34:56Z", "0x1F 0b1010 0o17", "1e-10 6.022e23",
          "-42", "+7", "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3",
          "\u0661\u0662\u0663 \u0967\u0968\u0969", "\u00bd \u00bc \u00b2 \u00b3", "\u216b \u2160",
          "\u2460\u2461\u2462", "\uff11\uff12\uff13", "v1.2.3-rc.4", "$1,234.56", "50%", "1/2"]
    # code
    t += [
        "def f(x):\n    return x ** 2\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
        "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }",
        "const f = async (a, b) => { await g(a?.b ?? c); };",
        "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![1, 2];\n    Ok(())\n}",
        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n",
        "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do echo \"$f\"; done\n",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
        "<html><head><title>T</title></head><body><p class=\"x\">Hi &amp; bye</p></body></html>",
        "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\\u00e9\"}}",
        "name: test\nitems:\n  - one\n  - two\n",
        "# Title\n\n## Sub\n\n- item *em* **strong** `code`\n\n```python\nprint(1)\n```\n",
        "\\begin{equation} E = mc^2 \\end{equation}",
        "^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@example\\.com$",
        "--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n-int a;\n+long a;\n",
        "if x != y && z <= 3 || !w { x += 1; y -= 2; z *= 3; w /= 4; }",
        "    def method(self):\n        pass\n\n\n\nclass A:\n\tpass",
        "std::vector<std::pair<int, std::string>> v{{1, \"a\"}};",
        "lambda x: x[::-1]  # reverse",
        "a=1;b=2;c=a+b;print(c)",
    ]
    # URLs, e-mail, paths
    t += ["https://example.com/path?q=1&r=two#frag", "http://localhost:8080/",
          "ftp://user:pass@host.example.org/file.tar.gz", "mailto:someone@example.com",
          "user.name+tag@sub.domain.co.uk", "/usr/local/bin/python3", "C:\\Windows\\System32\\",
          "www.wikipedia.org/wiki/Unicode_equivalence", "https://例え.jp/パス"]
    # scripts
    t += [
        "\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
        "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a",
        "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u0627\u0644\u0652\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u064e\u0651\u0629\u064f",
        "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0995\u09c7\u09ae\u09a8 \u0986\u099b\u09c7\u09a8",
        "\u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
        "\u0e9e\u0eb2\u0eaa\u0eb2\u0ea5\u0eb2\u0ea7",
        "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601",
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
        "\u0532\u0561\u0580\u0565\u0582",
        "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
        "\u1230\u120b\u121d",
        "\u1828\u1823\u1829\u182d\u1823\u1837",
        "\u0f56\u0f7c\u0f51\u0f0b\u0f66\u0f90\u0f51\u0f0b",
        "\u0d86\u0dba\u0dd4\u0db6\u0ddd\u0dc0\u0db1\u0dca",
        "\u1019\u1004\u103a\u1039\u1002\u101c\u102c\u1015\u102b",
        "\u13a3\u13b3\u13a9",
        "\U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
        "\U00010300\U00010301\U00010302",
        "Hello \u043c\u0438\u0440 \u4e16\u754c \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \U0001f30d",
        "\u0130stanbul \u0131\u015f\u0131k",
        "Stra\u00dfe STRASSE \u1e9e",
        "\u00c6sir \u00d8re \u00e5",
        "Vi\u1ec7t Nam",
    ]
    # combining marks and normalisation (NFC matters)
    t += ["e\u0301", "cafe\u0301", "caf\u00e9", "A\u030a", "\u212b", "\u2126", "\u212a",
          "n\u0303", "a\u0323\u0302", "a\u0302\u0323", "\u1ead", "\u0301", "\u0301abc",
          " \u0301", "a\u0301\u0301", "\ufb01", "\u0344", "\uf900", "\u0958",
          ">\u0338", "=\u0338", "<\u0338", "\u1100\u1161\u11a8", "\u1100\u1161", "\u110b\u1167\u11bc",
          "\u3131\u314f", "Zoe\u0308 Bronte\u0308", "\u00e9\u0301", "o\u0308\u0304", "\u022b",
          "\u0915\u093c", "\u09a1\u09bc", "\u0dd9\u0dcf", "\u1025\u102e", "e\u20dd", "q\u0307\u0323",
          "\u0041\u030a\u0301", "\u00c5\u0301", "\u1e9b\u0323"]
    # emoji
    t += ["\U0001f600", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
          "\U0001f44d\U0001f3fd", "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5", "1\ufe0f\u20e3",
          "\u2764\ufe0f", "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f9d1\U0001f3ff\u200d\U0001f4bb",
          "I \u2764\ufe0f tokenizers \U0001f680\U0001f680!",
          "\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 \U0001f999\U0001f999",
          "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "\u263a", "\u263a\ufe0e",
          "\U0001f469\U0001f3fb\u200d\u2764\ufe0f\u200d\U0001f48b\u200d\U0001f468\U0001f3fc"]
    # special-token text and tokenizer-internal symbols
    t += ["<|endoftext|>", "Hello<|endoftext|>World", "<|endoftext|><|endoftext|>",
          " <|endoftext|> ", "<|unk|>", "<|endoftext|>\u0338", "e<|endoftext|>\u0301",
          "<|endof", "<|endoftext|", "<s>", "</s>", "<s> hi </s>", "<unk>", "<pad>",
          "[INST] What is 2+2? [/INST]", "[TOOL_CALLS]", "[REFERENCE_DOC_3]", "x[REFERENCE_DOC_12]y",
          "[control_8]", "\u2581", "\u2581\u2581hello", "hello\u2581world", "<0x41>", "\u0120\u010a",
          "<|endoftext|>  <|endoftext|>", "x \u2581 y", "\u2581 \u2581", "a \u2581b", "a\u2581 b",
          "\u00a0\u00a0\u00a0x", "\u3000 \u3000x", " \u200d ", "\u200d"]
    # punctuation runs
    t += ["!!!!!!", "......", "?!?!?!", "-----", "======", "***", "~~~~", "```", "''''''",
          "\"\"\"\"", "------======= \"\"\"\"......!!!!!!??????", "((()))", "[[]]{{}}", "<<>>",
          "\u2014\u2013\u2012", "\u00ab\u00bb\u201c\u201d\u2018\u2019", "\u3002\u3001\uff01\uff1f",
          "@#$%^&*", "\\\\\\\\", "/////", "_____", "|||", "::", ";;"]
    # odd code points
    t += ["\ufffd", "a\ufffdb", "\ue000", "\U000f0000", "\U0010ffff", "\u0378", "\ufeffBOM",
          "\u200e\u200f", "\u00ad", "\u2060", "\U0001d7d8\U0001d7d9", "\ufe0f"]
    # prose
    t += [
        "The quick brown fox jumps over the lazy dog.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was "
        "the age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
        "  Leading spaces, then words; then punctuation -- and dashes... \"quotes\" (parens).",
        "Mr. O'Neil's dog can't (won't?) fetch: 3 balls, 2 sticks & 1 frisbee!",
        "New paragraph.\n\nAnother one after a blank line.\n\n\nAnd three newlines.",
        "Tokenization is the process of splitting text into tokens. "
        "Byte-level BPE never produces unknown tokens.",
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n",
        "naïve café résumé coöperate fiancée jalapeño",
    ]
    # long words
    t += ["supercalifragilisticexpialidocious" * 12, "x" * 300, "ab" * 200,
          "\U0001f642" * 40, "\u4e00" * 80, "1234567890" * 20,
          "aGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgYmFzZTY0IHN0cmluZyB3aXRob3V0IHNwYWNlcw==" * 3,
          "Pneumonoultramicroscopicsilicovolcanoconiosis", "a" + "\u0301" * 30]
    return t


def generated():
    t = []
    # every ASCII control character, alone and between letters
    for c in list(range(0x00, 0x20)) + [0x7f]:
        t.append(chr(c))
        t.append("a" + chr(c) + "b")
    # C1 controls
    t += ["x" + chr(c) + "y" for c in (0x80, 0x85, 0x9f)]
    # runs of 1..33 spaces between words, before a word, alone
    for n in range(1, 34):
        t.append("a" + " " * n + "b")
    for n in (1, 2, 3, 5, 8, 16, 23, 24, 25, 26, 33, 48, 49, 50, 70):
        t.append(" " * n + "word")
        t.append(" " * n)
    for n in (1, 2, 3, 24, 25):
        t.append("word" + " " * n)
        t.append("x" + " " * n + "\n" + " " * n + "y")
    # tab / newline / space mixes
    for s in ["\t", "\n", "\r", " "]:
        for u in ["\t", "\n", "\r", " "]:
            t.append("a" + s + u + "b")
            t.append(s + u + "c")
    for n in (2, 3, 5, 10):
        t.append("\n" * n)
        t.append("\t" * n + "x")
        t.append("x" + " \n" * n)
    # numbers of many lengths
    for n in range(1, 25):
        t.append("".join(str((i * 7 + 3) % 10) for i in range(n)))
    t += [" " + "9" * n for n in (1, 2, 3, 4, 5, 10)]
    # NFD vs NFC forms of accented letters
    for w in ["\u00e9t\u00e9", "\u00c5ngstr\u00f6m", "\u1ec7", "\u00f1and\u00fa", "\u01d6",
              "\u1e69", "\u0174\u0175", "\u00e0\u00e8\u00ec\u00f2\u00f9", "\u03ac\u03ad\u03ae\u03af\u0390"]:
        t.append(unicodedata.normalize("NFD", w))
        t.append(unicodedata.normalize("NFC", w))
    # Hangul: composed and conjoining jamo
    for w in ["\ud55c\uae00", "\uac01\ud7a3", "\ub2ed"]:
        t.append(unicodedata.normalize("NFD", w))
    return t


def write_corpus(path):
    seen = set()
    out = []
    for s in hand_written() + generated():
        if s not in seen:
            seen.add(s)
            out.append(s)
    with open(path, "w", encoding="utf-8") as f:
        for s in out:
            f.write(json.dumps(s, ensure_ascii=True) + "\n")
    print(f"wrote {len(out)} texts to {path}")


# ------------------------------------------------------------------------------------------
# fuzz texts: random mixes of hard characters and fragments (fixed seed)

FUZZ_POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3
    + list("0123456789") * 2
    + list(" " * 20 + "\t\n\r")
    + list("'\".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`")
    + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "<|endoftext|>", "<|unk|>",
       "<s>", "</s>", "[INST]", "\u2581", "  ", "   ", "    "]
    + list("\u00e9\u00e8\u00fc\u00f1\u00e7\u00df\u00c5\u00d8\u0153")
    + ["e\u0301", "a\u0308", "\u0301", "\u0323", "\u0302", "\u0338", "\u20dd", "\u093c",
       "\u212b", "\u2126", "\uf900", "\u0344"]
    + list("\u4e2d\u6587\u5b57\u65e5\u672c\u8a9e\u3072\u3089\u30ab\u30bf\ud55c\uad6d")
    + ["\u1100", "\u1161", "\u11a8", "\u3131"]
    + list("\u043f\u0440\u0438\u0432\u0435\u0442\u0416\u0401")
    + list("\u0645\u0631\u062d\u0628\u064e\u0650\u0651")
    + list("\u0928\u092e\u0938\u094d\u0924\u0947\u093f")
    + list("\u0e2a\u0e27\u0e31\u0e14\u0e35")
    + list("\u03b1\u03b2\u03b3\u0391\u03ac")
    + ["\U0001f600", "\U0001f44d", "\U0001f3fd", "\u200d", "\ufe0f", "\U0001f1fa", "\U0001f1f8",
       "\u2764", "\U0001f680", "\U0001f468", "\U0001f469"]
    + ["\u00a0", "\u3000", "\u2028", "\u0085", "\u200b", "\u000b", "\u000c", "\u001c", "\u001f",
       "\u0001", "\u007f", "\ufeff", "\ufffd", "\u00ad"]
    + list("\u00bd\u00b2\u0661\u0967\u2160\u2460\uff11")
)


def fuzz_texts(count, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 89])
        out.append("".join(rng.choice(FUZZ_POOL) for _ in range(n)))
    return out


# Code point ranges for random Unicode text: ASCII, then Latin/Greek/Cyrillic/..., the rest of
# the BMP, supplementary planes (emoji, historic scripts, CJK extensions), tags and selectors.
UNICODE_RANGES = [(0x20, 0x7E, 30), (0x00, 0x1F, 2), (0x80, 0x7FF, 15), (0x800, 0xD7FF, 20),
                  (0xE000, 0xFFFD, 5), (0x10000, 0x1FFFF, 15), (0x20000, 0x3134F, 5),
                  (0xE0000, 0xE01EF, 2), (0xF0000, 0x10FFFF, 1)]
WHITESPACE = " \t\n\r\u000b\u000c\u0085\u00a0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"


def random_unicode_texts(count, seed=4321):
    rng = random.Random(seed)
    weights = [w for _, _, w in UNICODE_RANGES]
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.15:
                chars.append(rng.choice(WHITESPACE))
                continue
            lo, hi, _ = rng.choices(UNICODE_RANGES, weights)[0]
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


def corpus_mixes(corpus, count, seed=99):
    # Longer texts: several corpus texts joined with assorted separators.
    rng = random.Random(seed)
    seps = ["", " ", "  ", "\n", "\n\n", "\t", " \n ", "<|endoftext|>", "\u2581"]
    return [rng.choice(seps).join(rng.choice(corpus) for _ in range(rng.randint(2, 8)))
            for _ in range(count)]


# ------------------------------------------------------------------------------------------
# references


def bytes_to_unicode():
    # GPT-2 byte-level alphabet: printable bytes map to themselves, the others to 256+i.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class Refs:
    def __init__(self, args):
        from tokenizers import Tokenizer
        import sentencepiece as spm

        self.neox = Tokenizer.from_file(args.neox)
        self.spm = {
            "mistral_v3": spm.SentencePieceProcessor(model_file=args.spm),
            "mistral_v1": spm.SentencePieceProcessor(model_file=args.spm_v1),
        }

    def record(self, text):
        rec = self.full_record(text)
        # Decoded text equal to the input is left out (the usual case): readers default to it.
        for key in [k for k in rec if k.endswith("_decode") or k.endswith("_decode_skip")]:
            if rec[key] == text:
                del rec[key]
        return rec

    def full_record(self, text):
        rec = {}
        try:
            enc = self.neox.encode(text, add_special_tokens=False)
            ids = enc.ids
            rec["neox"] = ids
            with_special = self.neox.encode(text, add_special_tokens=True).ids
            if with_special != ids:
                rec["neox_with_special"] = with_special
            rec["neox_decode"] = self.neox.decode(ids, skip_special_tokens=False)
            skipped = self.neox.decode(ids, skip_special_tokens=True)
            if skipped != rec["neox_decode"]:
                rec["neox_decode_skip"] = skipped
        except Exception as e:  # record and move on: the test skips entries without ids
            rec["neox"] = None
            rec["neox_error"] = repr(e)
        for name, sp in self.spm.items():
            try:
                ids = sp.encode(text)
                rec[name] = ids
                rec[name + "_decode"] = sp.decode(ids)
            except Exception as e:
                rec[name] = None
                rec[name + "_error"] = repr(e)
        return rec

    def decode_cases(self):
        cases = []
        b2u = bytes_to_unicode()

        def neox_byte(b):
            return self.neox.token_to_id(b2u[b])

        def add_neox(ids, note):
            cases.append({
                "tokenizer": "neox", "note": note, "ids": ids,
                "text": self.neox.decode(ids, skip_special_tokens=False),
                "text_skip_special": self.neox.decode(ids, skip_special_tokens=True),
            })

        e = [neox_byte(b) for b in b"\xe2\x82\xac"]
        add_neox(e, "euro sign split into three byte tokens")
        add_neox(e[:2], "truncated 3-byte sequence")
        add_neox(e[:1] + [neox_byte(0x41)], "lead byte then ASCII")
        add_neox([neox_byte(b) for b in b"\xf0\x9f\x98"], "truncated 4-byte sequence")
        add_neox([neox_byte(b) for b in b"\xf0\x9f\x98\x80"], "emoji from four byte tokens")
        add_neox([neox_byte(0x80), neox_byte(0xBF)], "lone continuation bytes")
        add_neox([neox_byte(b) for b in b"\xe0\x80\xaf"], "overlong encoding")
        add_neox([neox_byte(b) for b in b"\xed\xa0\x80"], "UTF-16 surrogate encoded")
        add_neox([neox_byte(b) for b in b"\xf4\x90\x80\x80"], "above U+10FFFF")
        add_neox([neox_byte(0xE2), 0, neox_byte(0x82), neox_byte(0xAC)], "special token inside a character")
        add_neox([0] + self.neox.encode("Hello world").ids + [0], "endoftext around text")
        add_neox([1, 50276, 50254], "unk and added space tokens")
        add_neox(self.neox.encode("caf\u00e9 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u4e2d\u6587").ids,
                 "multi-byte text")

        for name, sp in self.spm.items():
            def piece(p, sp=sp):
                return sp.piece_to_id(p)

            def add(ids, note, name=name, sp=sp):
                cases.append({"tokenizer": name, "note": note, "ids": ids, "text": sp.decode(ids)})

            byte = lambda b, sp=sp: sp.piece_to_id("<0x%02X>" % b)
            add([byte(b) for b in b"\xe2\x82\xac"], "euro from byte pieces")
            add([byte(b) for b in b"\xe2\x82"], "truncated 3-byte sequence")
            add([byte(0xE2), byte(0x41)], "lead byte then ASCII byte")
            add([byte(0xE2), piece("\u2581the"), byte(0x82)], "byte run broken by a piece")
            add([byte(b) for b in b"\xf0\x9f\x98"], "truncated 4-byte sequence")
            add([byte(0x80), byte(0xBF)], "lone continuation bytes")
            add([byte(0xC0), byte(0xAF)], "overlong encoding")
            add([byte(b) for b in b"\xed\xa0\x80"], "UTF-16 surrogate encoded")
            add([byte(b) for b in b"\xf4\x90\x80\x80"], "above U+10FFFF")
            add([byte(0xFF)], "byte never valid in UTF-8")
            add([byte(0x20), piece("\u2581the")], "space byte before first piece")
            add([piece("\u2581the")], "dummy prefix dropped")
            add([piece("\u2581"), piece("\u2581the")], "only one leading space dropped")
            add([1, piece("\u2581the"), 2], "bos and eos invisible")
            add([1, 1, piece("\u2581the")], "two bos then piece")
            add([0, piece("\u2581the")], "unknown piece")
            add([piece("\u2581the"), 1, piece("\u2581cat")], "control in the middle")
            add([piece("the"), piece("\u2581cat")], "no leading space")
            add([byte(0x41), piece("\u2581cat")], "byte first")
            add(sp.encode("  two leading spaces"), "two leading spaces round trip")
            add(sp.encode("caf\u00e9 \U0001f468\u200d\U0001f469\u200d\U0001f467 \u4e2d\u6587"),
                "multi-byte text")
        return cases

    def info(self):
        import tokenizers
        import sentencepiece

        out = {"tokenizers_version": tokenizers.__version__,
               "sentencepiece_version": sentencepiece.__version__,
               "neox_vocab_size": self.neox.get_vocab_size(with_added_tokens=True)}
        try:
            import transformers
            out["transformers_version"] = transformers.__version__
        except Exception:
            pass
        for name, sp in self.spm.items():
            out[name] = {"pieces": sp.get_piece_size(), "bos": sp.bos_id(), "eos": sp.eos_id(),
                         "unk": sp.unk_id(), "pad": sp.pad_id()}
        return out


def run_refs(args):
    with open(args.corpus, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f if line.strip()]
    refs = Refs(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "expected.jsonl"), "w", encoding="utf-8") as f:
        for text in corpus:
            f.write(json.dumps(refs.record(text), ensure_ascii=True) + "\n")
    fuzz_sets = {
        "fuzz.jsonl": fuzz_texts(args.fuzz_count),
        "fuzz_unicode.jsonl": random_unicode_texts(args.unicode_count),
        "fuzz_mix.jsonl": corpus_mixes(corpus, args.mix_count),
    }
    for name, texts in fuzz_sets.items():
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for text in texts:
                rec = {"text": text}
                rec.update(refs.record(text))
                f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    with open(os.path.join(args.out, "decode_cases.json"), "w", encoding="utf-8") as f:
        json.dump(refs.decode_cases(), f, ensure_ascii=True, indent=0)
    with open(os.path.join(args.out, "info.json"), "w", encoding="utf-8") as f:
        json.dump(refs.info(), f, indent=1)
    if args.bench_text:
        with open(os.path.join(args.out, "bench.json"), "w", encoding="utf-8") as f:
            json.dump(bench_refs(refs, args.bench_text), f, indent=1)
    print(f"{len(corpus)} corpus texts, {sum(map(len, fuzz_sets.values()))} fuzz texts -> {args.out}")


def bench_refs(refs, path):
    # A whole large text is too big to commit as ids: record the count and a hash of the ids
    # written as decimal numbers joined by commas, plus the reference's own encoding time.
    import hashlib
    import time

    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {"bytes": len(text.encode("utf-8"))}
    encoders = {"neox": lambda t: refs.neox.encode(t, add_special_tokens=False).ids}
    for name, sp in refs.spm.items():
        encoders[name] = sp.encode
    for name, encode in encoders.items():
        start = time.perf_counter()
        ids = encode(text)
        seconds = time.perf_counter() - start
        digest = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
        out[name] = {"count": len(ids), "sha256": digest, "seconds": round(seconds, 3)}
    return out


def unicode_probe(neox_path):
    """What HF's NFC normalizer and ByteLevel regex do with every code point.

    Unicode tables differ between library versions (new letters, new combining marks), so this
    records the reference's own view: each code point's regex class, and the NFC output for
    probes that show decompositions and combining classes, kept only where NFC changes them.
    """
    import unicodedata
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(neox_path)
    pre = tok.pre_tokenizer
    norm = tok.normalizer

    def splits(text):
        return [offsets for _, offsets in pre.pre_tokenize_str(text)]

    runs = []  # [first, last, class] with class L (letter), N (number), S (space), O (other)
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if c == " ":
            cls = "S"
        else:
            first = splits("a" + c + "1")
            if first == [(0, 2), (2, 3)]:
                cls = "L"
            elif first == [(0, 1), (1, 3)]:
                cls = "N"
            else:
                cls = "S" if splits(c + c + "x") == [(0, 1), (1, 2), (2, 3)] else "O"
        if runs and runs[-1][2] == cls and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, cls])

    probes = {
        "alone": lambda c: c,
        "after_acute": lambda c: "x\u0301" + c,   # reorders marks of class < 230
        "before_dot": lambda c: "x" + c + "\u0316",  # reorders marks of class > 220
    }
    changed = {name: [] for name in probes}
    decomposed = []  # [cp, NFD by this Python, HF's NFC of it]
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        for name, make in probes.items():
            text = make(c)
            out = norm.normalize_str(text)
            if out != text:
                changed[name].append([cp, out])
        nfd = unicodedata.normalize("NFD", c)
        if nfd != c:
            decomposed.append([cp, nfd, norm.normalize_str(nfd)])
    return ({"python_unicode": unicodedata.unidata_version, "classes": runs, "nfc_changed": changed},
            decomposed)


def run_probe(args):
    os.makedirs(args.out, exist_ok=True)
    probe, decomposed = unicode_probe(args.neox)
    with open(os.path.join(args.out, "unicode_probe.json"), "w", encoding="utf-8") as f:
        json.dump(probe, f, ensure_ascii=True, separators=(",", ":"))
    with open(os.path.join(args.out, "unicode_probe_nfd.json"), "w", encoding="utf-8") as f:
        json.dump(decomposed, f, ensure_ascii=True)
    if args.texts:
        with open(args.texts, encoding="utf-8") as f:
            texts = [json.loads(line) for line in f if line.strip()]
        refs = Refs(args)
        with open(os.path.join(args.out, "texts.jsonl"), "w", encoding="utf-8") as f:
            for text in texts:
                rec = {"text": text}
                rec.update(refs.record(text))
                f.write(json.dumps(rec, ensure_ascii=True) + "\n")
    print("probe written to", args.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--out", required=True)
    r = sub.add_parser("refs")
    r.add_argument("--corpus", required=True)
    r.add_argument("--neox", required=True)
    r.add_argument("--spm", required=True)
    r.add_argument("--spm-v1", required=True)
    r.add_argument("--out", required=True)
    # The defaults give the committed fixtures; larger counts extend the same sequences.
    r.add_argument("--fuzz-count", type=int, default=120, help="texts of hard fragments")
    r.add_argument("--unicode-count", type=int, default=80, help="texts of random code points")
    r.add_argument("--mix-count", type=int, default=60, help="corpus texts joined together")
    r.add_argument("--bench-text", help="a large text: record id count and hash, not the ids")
    pr = sub.add_parser("probe", help="the reference's Unicode tables, and refs for extra texts")
    pr.add_argument("--neox", required=True)
    pr.add_argument("--spm")
    pr.add_argument("--spm-v1")
    pr.add_argument("--texts", help="JSON-lines texts to record like fuzz texts (needs --spm*)")
    pr.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.cmd == "corpus":
        write_corpus(args.out)
    elif args.cmd == "probe":
        run_probe(args)
    else:
        run_refs(args)


if __name__ == "__main__":
    sys.exit(main())
