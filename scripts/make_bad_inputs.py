#!/usr/bin/env python3
"""Writes the bad-input corpus (tests/bad-inputs/) and the fuzzing seed corpora
(tests/fuzz/corpus/). Plain Python 3, no packages: the files are committed, this script is how
they were made and how to make more.

Every bad model file is a small, valid Mamba-1 GGUF (built here, with a byte-level BPE
vocabulary of its own so that text prompts work) with exactly one thing broken. The cases,
each with the tool, arguments, expected exit code and the text the one stderr line must hold,
go to tests/bad-inputs/cases.json, which tests/test_bad_inputs.cpp runs through the real tools.

Usage: scripts/make_bad_inputs.py            (rewrites both directories)
"""
import json
import os
import random
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BAD = os.path.join(ROOT, "tests", "bad-inputs")
SEEDS = os.path.join(ROOT, "tests", "fuzz", "corpus")

# ---- GGUF ---------------------------------------------------------------------------------
# Value types and tensor dtypes as in src/gguf/gguf.h.
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
DT_F32, DT_F16, DT_BF16 = 0, 1, 30
DT_SIZE = {DT_F32: 4, DT_F16: 2, DT_BF16: 2}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gvalue(t, v):
    if t == STR:
        return gstr(v)
    if t not in SCALAR and t != ARR:  # an invalid type id: its value is 4 zero bytes
        return struct.pack("<I", v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(gvalue(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


class Gguf:
    """A GGUF file as lists, so one field can be broken before writing."""

    def __init__(self):
        self.version = 3
        self.alignment = 32
        self.kv = []       # (key, type, value)
        self.tensors = []  # dicts: name, ne (fastest first), dtype, data (bytes), offset (None: auto)

    def add(self, key, t, v):
        self.kv.append((key, t, v))

    def tensor(self, name, torch_shape, values, dtype=DT_F32):
        fmt = {DT_F32: "<f", DT_F16: "<e"}[dtype]
        data = b"".join(struct.pack(fmt, x) for x in values)
        self.tensors.append({"name": name, "ne": list(reversed(torch_shape)), "dtype": dtype,
                             "data": data, "offset": None})

    def layout(self):
        """Assigns aligned offsets to tensors that have none; returns the data blob."""
        blob = b""
        for t in self.tensors:
            if t["offset"] is None:
                blob += b"\0" * (-len(blob) % self.alignment)
                t["offset"] = len(blob)
                blob += t["data"]
        return blob

    def header(self, n_tensors=None, n_kv=None):
        out = b"GGUF" + struct.pack("<IQQ", self.version,
                                    len(self.tensors) if n_tensors is None else n_tensors,
                                    len(self.kv) if n_kv is None else n_kv)
        for k, t, v in self.kv:
            out += gstr(k) + struct.pack("<I", t) + gvalue(t, v)
        for t in self.tensors:
            out += gstr(t["name"]) + struct.pack("<I", len(t["ne"]))
            out += b"".join(struct.pack("<Q", d) for d in t["ne"])
            out += struct.pack("<IQ", t["dtype"], t["offset"])
        return out

    def bytes(self, **kw):
        blob = self.layout()
        head = self.header(**kw)
        return head + b"\0" * (-len(head) % self.alignment) + blob


# ---- a tiny valid model -------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable character map used by byte-level BPE vocabularies."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def vocabulary():
    """256 byte tokens, a few merges, and <|endoftext|>: enough for any text."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("e", "ll"), ("Ġ", "w")]:
        merges.append(a + " " + b)
        tokens.append(a + b)
    tokens.append("<|endoftext|>")
    types = [1] * (len(tokens) - 1) + [3]
    return tokens, types, merges


D_MODEL, N_LAYER, D_STATE, D_CONV, EXPAND, DT_RANK = 8, 1, 4, 4, 2, 1
D_INNER = D_MODEL * EXPAND


def tiny_model(seed=1, arch_keys=None):
    rnd = random.Random(seed)
    tokens, types, merges = vocabulary()
    n_vocab = len(tokens)
    g = Gguf()
    a = "mamba."
    g.add("general.architecture", STR, "mamba")
    g.add("general.name", STR, "bad-input base")
    g.add(a + "context_length", U32, 1 << 20)
    g.add(a + "embedding_length", U32, D_MODEL)
    g.add(a + "block_count", U32, N_LAYER)
    g.add(a + "vocab_size", U32, n_vocab)
    g.add(a + "ssm.conv_kernel", U32, D_CONV)
    g.add(a + "ssm.inner_size", U32, D_INNER)
    g.add(a + "ssm.state_size", U32, D_STATE)
    g.add(a + "ssm.time_step_rank", U32, DT_RANK)
    g.add(a + "attention.layer_norm_rms_epsilon", F32, 1e-5)
    g.add("tokenizer.ggml.model", STR, "gpt2")
    g.add("tokenizer.ggml.pre", STR, "gpt-2")
    g.add("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.add("tokenizer.ggml.token_type", ARR, (I32, types))
    g.add("tokenizer.ggml.merges", ARR, (STR, merges))
    g.add("tokenizer.ggml.eos_token_id", U32, n_vocab - 1)

    def rand(shape, scale=0.5):
        n = 1
        for d in shape:
            n *= d
        return [rnd.uniform(-scale, scale) for _ in range(n)]

    g.tensor("token_embd.weight", [n_vocab, D_MODEL], rand([n_vocab, D_MODEL]), DT_F16)
    g.tensor("output_norm.weight", [D_MODEL], [1.0] * D_MODEL)
    for il in range(N_LAYER):
        p = "blk.%d." % il
        g.tensor(p + "attn_norm.weight", [D_MODEL], [1.0] * D_MODEL)
        g.tensor(p + "ssm_in.weight", [2 * D_INNER, D_MODEL], rand([2 * D_INNER, D_MODEL]))
        g.tensor(p + "ssm_conv1d.weight", [D_INNER, D_CONV], rand([D_INNER, D_CONV]))
        g.tensor(p + "ssm_conv1d.bias", [D_INNER], rand([D_INNER]))
        g.tensor(p + "ssm_x.weight", [DT_RANK + 2 * D_STATE, D_INNER],
                 rand([DT_RANK + 2 * D_STATE, D_INNER]))
        g.tensor(p + "ssm_dt.weight", [D_INNER, DT_RANK], rand([D_INNER, DT_RANK]))
        g.tensor(p + "ssm_dt.bias", [D_INNER], rand([D_INNER]))
        g.tensor(p + "ssm_a", [D_INNER, D_STATE], [-float(1 + (i % D_STATE))
                                                    for i in range(D_INNER * D_STATE)])
        g.tensor(p + "ssm_d", [D_INNER], [1.0] * D_INNER)
        g.tensor(p + "ssm_out.weight", [D_MODEL, D_INNER], rand([D_MODEL, D_INNER]))
    return g


def set_kv(g, key, t, v):
    for i, (k, _, _) in enumerate(g.kv):
        if k == key:
            g.kv[i] = (key, t, v)
            return g
    g.kv.append((key, t, v))
    return g


def find_tensor(g, name):
    return next(t for t in g.tensors if t["name"] == name)


# ---- the cases ----------------------------------------------------------------------------

CASES = []


def case(name, expect, args=None, tool="mamba-cli", code=1, data=None, stream="error"):
    """A case: `data` (bytes) is written as tests/bad-inputs/<name>.gguf and passed with -m,
    unless `args` say otherwise. In args {file} stands for that file, {good} for good.gguf,
    {dir} for the bad-inputs directory, {tmp} for a scratch directory, and {hex:6162ff} for
    those raw bytes (JSON text cannot hold ill-formed UTF-8)."""
    entry = {"name": name, "tool": tool, "exit": code, stream: expect}
    if data is not None:
        path = name + ".gguf"
        with open(os.path.join(BAD, path), "wb") as f:
            f.write(data)
        entry["file"] = path
    entry["args"] = args if args is not None else ["-m", "{file}", "--prompt-ids", "1,2", "-n", "2"]
    CASES.append(entry)


def model_cases():
    good = tiny_model().bytes()
    with open(os.path.join(BAD, "good.gguf"), "wb") as f:
        f.write(good)

    # Truncation at offsets across the header, the tensor infos and the data.
    g = tiny_model()
    g.layout()
    head = len(g.header())  # header and tensor infos, before the padding and the data
    for cut in [0, 3, 4, 7, 8, 15, 23, 24, 40, 100, 1000, head // 2, head - 10, head - 1, head,
                head + 40, len(good) - 1]:
        expect = ("not a GGUF file" if cut < 4 else
                  "cannot fit in a file" if 24 <= cut <= 100 else
                  "exceeds the remaining" if cut in (1000, head // 2) else
                  "file truncated" if cut < head else "runs past the end")
        case("truncated_%d" % cut, expect, data=good[:cut])

    case("bad_magic", "not a GGUF file (bad magic)", data=b"GGUX" + good[4:])
    case("bad_magic_safetensors", "not a GGUF file", data=b"\x10\0\0\0\0\0\0\0{}" + b" " * 64)
    for v, why in [(1, "only 2 and 3"), (4, "only 2 and 3"), (0x03000000, "big-endian"),
                   (0xFFFFFFFF, "only 2 and 3")]:
        case("version_%x" % v, "unsupported GGUF version", data=good[:4] + struct.pack("<I", v) + good[8:])
        CASES[-1]["error"] += " %d" % v if v != 0x03000000 else ""
        CASES[-1]["error"] = "unsupported GGUF version"

    # Counts far beyond what the file can hold.
    for n, name in [(1 << 62, "huge"), (0xFFFFFFFFFFFFFFFF, "max"), (10 ** 6, "million")]:
        case("tensor_count_" + name, "n_tensors %d cannot fit" % n, data=g.bytes(n_tensors=n))
        case("kv_count_" + name, "n_kv %d cannot fit" % n, data=g.bytes(n_kv=n))
    # More items than present: the reader runs off the end.
    case("kv_count_plus_one", "exceeds the remaining", data=g.bytes(n_kv=len(g.kv) + 1))

    # Huge string and array lengths.
    raw = bytearray(good)
    key0 = 24  # the first key's u64 length
    raw[key0:key0 + 8] = struct.pack("<Q", 1 << 63)
    case("huge_key_length", "has length 9223372036854775808, which exceeds", data=bytes(raw))
    h = tiny_model()
    h.kv.insert(0, ("general.huge", ARR, (STR, [])))
    b = bytearray(h.bytes())
    at = 24 + 8 + len("general.huge") + 4 + 4  # key, type, elem type -> length
    b[at:at + 8] = struct.pack("<Q", 1 << 61)
    case("huge_array_length", "array at offset", data=bytes(b))
    h = tiny_model()
    h.kv.insert(0, ("general.deep", ARR, (ARR, [(ARR, [(ARR, [(ARR, [(ARR, [(U8, [1])])])])])])))
    case("array_nesting", "nests arrays more than 4 deep", data=h.bytes())
    h = tiny_model()
    h.kv.insert(0, ("general.t", 13, 0))
    raw = h.bytes()
    case("unknown_value_type", "has unknown type 13", data=raw)
    h = set_kv(tiny_model(), "general.flag", BOOL, True)
    b = h.bytes()
    i = b.index(b"general.flag") + len("general.flag") + 4
    b = b[:i] + b"\x07" + b[i + 1:]
    case("bad_bool", "invalid BOOL value 7", data=b)
    h = tiny_model()
    h.kv.append(("general.name", STR, "again"))
    case("duplicate_key", "duplicate metadata key 'general.name'", data=h.bytes())
    h = tiny_model()
    h.kv.insert(0, ("bad\nkey", STR, "x"))
    case("control_char_key", "is empty or not valid UTF-8", data=h.bytes())
    h = tiny_model()
    h.kv.insert(0, (b"\xff\xfe", STR, "x"))
    case("invalid_utf8_key", "is empty or not valid UTF-8", data=h.bytes())

    # Tensor infos.
    def broken(name, expect, fn):
        h = tiny_model()
        fn(h)
        case(name, expect, data=h.bytes())

    broken("dims_product_overflow", "product of its dimensions overflows",
           lambda h: find_tensor(h, "ssm_in.weight".join(["blk.0.", ""]))["ne"].__setitem__(
               slice(None), [1 << 32, 1 << 32]))
    broken("bytes_overflow", "size in bytes overflows",
           lambda h: find_tensor(h, "blk.0.ssm_in.weight")["ne"].__setitem__(
               slice(None), [1 << 31, 1 << 31]))
    broken("zero_dim", "zero-sized dimension",
           lambda h: find_tensor(h, "blk.0.ssm_d")["ne"].__setitem__(0, 0))
    broken("five_dims", "has 5 dimensions",
           lambda h: find_tensor(h, "blk.0.ssm_d")["ne"].extend([1, 1, 1, 1]))
    broken("zero_dims", "has 0 dimensions",
           lambda h: find_tensor(h, "blk.0.ssm_d")["ne"].clear())
    broken("offset_past_end", "runs past the end of the file",
           lambda h: find_tensor(h, "output_norm.weight").__setitem__("offset", 1 << 40))
    broken("offset_overflow", "runs past the end of the file",
           lambda h: find_tensor(h, "output_norm.weight").__setitem__("offset", (1 << 64) - 32))
    broken("misaligned_offset", "is not a multiple of the alignment",
           lambda h: find_tensor(h, "output_norm.weight").__setitem__("offset", 4))
    broken("alignment_not_pow2", "is not a power of two",
           lambda h: h.kv.insert(0, ("general.alignment", U32, 24)))
    broken("alignment_zero", "is not a power of two",
           lambda h: h.kv.insert(0, ("general.alignment", U32, 0)))
    broken("alignment_type", "general.alignment has type UINT64",
           lambda h: h.kv.insert(0, ("general.alignment", U64, 32)))
    broken("overlapping_tensors", "overlap",
           lambda h: find_tensor(h, "blk.0.ssm_d").__setitem__(
               "offset", 0))
    broken("unknown_dtype", "has unsupported type 99 (unknown)",
           lambda h: find_tensor(h, "blk.0.ssm_d").__setitem__("dtype", 99))
    broken("quantised_dtype", "unsupported type 12 (Q4_K)",
           lambda h: find_tensor(h, "blk.0.ssm_in.weight").__setitem__("dtype", 12))
    broken("duplicate_tensor", "duplicate tensor name 'blk.0.ssm_d'",
           lambda h: h.tensors.append(dict(find_tensor(h, "blk.0.ssm_d"), offset=None)))
    broken("missing_tensor", "missing tensor blk.0.ssm_x.weight",
           lambda h: h.tensors.remove(find_tensor(h, "blk.0.ssm_x.weight")))
    broken("missing_embedding", "missing tensor token_embd.weight",
           lambda h: h.tensors.remove(find_tensor(h, "token_embd.weight")))
    broken("extra_tensor", "unexpected tensor blk.1.attn_norm.weight",
           lambda h: h.tensors.append(dict(find_tensor(h, "blk.0.attn_norm.weight"),
                                           name="blk.1.attn_norm.weight", offset=None)))
    broken("empty_tensor_name", "name '' is empty",
           lambda h: h.tensors.append(dict(find_tensor(h, "blk.0.ssm_d"), name="", offset=None)))

    # Shapes that contradict the config.
    broken("shape_vs_config", "blk.0.ssm_in.weight has shape [8, 16], expected [32, 8]",
           lambda h: find_tensor(h, "blk.0.ssm_in.weight")["ne"].__setitem__(slice(None), [16, 8]))
    broken("block_count_too_big", "missing tensor blk.1.attn_norm.weight",
           lambda h: set_kv(h, "mamba.block_count", U32, 2))
    broken("block_count_huge", "n_layer = 1000000 is out of range",
           lambda h: set_kv(h, "mamba.block_count", U32, 1000000))
    broken("vocab_size_mismatch", "vocab_size = 7 does not match token_embd.weight's",
           lambda h: set_kv(h, "mamba.vocab_size", U32, 7))
    broken("inner_size_zero", "d_inner = 0 is out of range",
           lambda h: set_kv(h, "mamba.ssm.inner_size", U32, 0))
    broken("negative_state_size", "d_state = -4 is out of range",
           lambda h: set_kv(h, "mamba.ssm.state_size", I32, -4))
    broken("conv_kernel_huge", "d_conv = 4294967295 is out of range",
           lambda h: set_kv(h, "mamba.ssm.conv_kernel", U32, 0xFFFFFFFF))
    broken("nan_epsilon", "bad norm epsilon",
           lambda h: set_kv(h, "mamba.attention.layer_norm_rms_epsilon", F32, float("nan")))
    broken("missing_arch", "missing metadata key 'general.architecture'",
           lambda h: h.kv.remove(next(x for x in h.kv if x[0] == "general.architecture")))
    broken("unknown_arch", "unknown architecture 'llama'",
           lambda h: set_kv(h, "general.architecture", STR, "llama"))
    broken("arch_wrong_type", "metadata key 'general.architecture' has type UINT32, expected STRING",
           lambda h: set_kv(h, "general.architecture", U32, 1))
    broken("missing_key", "missing metadata key 'mamba.ssm.state_size'",
           lambda h: h.kv.remove(next(x for x in h.kv if x[0] == "mamba.ssm.state_size")))
    broken("eos_out_of_range", "eos_token_id = 4096 is out",
           lambda h: set_kv(h, "tokenizer.ggml.eos_token_id", U32, 4096))
    broken("tokenizer_unknown_model", "tokenizer.ggml.model 'bert' is not supported",
           lambda h: set_kv(h, "tokenizer.ggml.model", STR, "bert"))
    broken("tokenizer_types_mismatch", "tokens but 3 token types",
           lambda h: set_kv(h, "tokenizer.ggml.token_type", ARR, (I32, [1, 1, 1])))
    broken("tokenizer_bad_merge", "is not two tokens separated by one space",
           lambda h: set_kv(h, "tokenizer.ggml.merges", ARR, (STR, ["abc"])))

    # An embedded tokenizer.model that is not one (parsed by our protobuf reader first).
    for what, payload, expect in [
            ("random", bytes(random.Random(3).randrange(256) for _ in range(3000)), "protobuf"),
            ("empty", b"", "no pieces"),
            ("truncated_float", b"\x0a\x05\x0a\x01a\x15\x00\x00\x80\x3f" * 50, "protobuf: truncated float")]:
        h = tiny_model()
        h.kv = [x for x in h.kv if not x[0].startswith("tokenizer.")]
        h.add("tokenizer.ggml.model", STR, "llama")
        h.add("tokenizer.sentencepiece.model", ARR, (U8, list(payload)))
        case("spm_model_" + what, "not a sentencepiece model (" + expect, data=h.bytes(),
             args=["-m", "{file}", "-p", "hello", "-n", "1"])

    # NaN and Inf weights: the model loads, with one warning line.
    for what, val in [("nan", float("nan")), ("inf", float("inf"))]:
        h = tiny_model()
        t = find_tensor(h, "blk.0.ssm_out.weight")
        d = bytearray(t["data"])
        d[12:16] = struct.pack("<f", val)
        t["data"] = bytes(d)
        case("weights_" + what, "1 NaN/Inf weight values in 1 tensor (blk.0.ssm_out.weight has 1 of 128)",
             code=0, data=h.bytes(), stream="warning",
             args=["-m", "{file}", "--prompt-ids", "1,2", "-n", "2", "--json"])
    h = tiny_model()
    t = find_tensor(h, "token_embd.weight")  # f16: 0x7e00 is a NaN
    t["data"] = b"\x00\x7e" * 5 + t["data"][10:]
    case("weights_f16_nan", "5 NaN/Inf weight values in 1 tensor (token_embd.weight has 5 of",
         code=0, data=h.bytes(), stream="warning",
         args=["-m", "{file}", "--prompt-ids", "1,2", "-n", "1", "--json"])


def prompt_cases():
    n_vocab = len(vocabulary()[0])
    case("prompt_invalid_utf8", "the prompt is not valid UTF-8", code=0, stream="warning",
         args=["-m", "{good}", "-p", "{hex:6162fffec328}", "-n", "2", "--json"])
    case("prompt_id_too_big", "prompt id %d is out of range (n_vocab = %d)" % (n_vocab, n_vocab),
         args=["-m", "{good}", "--prompt-ids", "1,%d" % n_vocab, "-n", "2"])
    case("prompt_id_negative", "prompt id -1 is out of range",
         args=["-m", "{good}", "--prompt-ids", "-1", "-n", "2"])
    case("prompt_id_overflow", "'99999999999' is not a token id",
         args=["-m", "{good}", "--prompt-ids", "1,99999999999", "-n", "2"])
    case("prompt_id_not_number", "'x' is not a token id",
         args=["-m", "{good}", "--prompt-ids", "1,x", "-n", "2"])
    case("prompt_id_empty_item", "has an empty item",
         args=["-m", "{good}", "--prompt-ids", "1,,2", "-n", "2"])
    case("prompt_empty", "the prompt is empty", args=["-m", "{good}", "-p", "", "-n", "2"])
    case("prompt_both", "give the prompt either",
         args=["-m", "{good}", "-p", "a", "--prompt-ids", "1", "-n", "2"])
    case("n_predict_negative", "-n must be >= 0",
         args=["-m", "{good}", "--prompt-ids", "1", "-n", "-1"])
    case("n_predict_zero", "", code=0, stream="error",
         args=["-m", "{good}", "--prompt-ids", "1,2", "-n", "0", "--json"])
    CASES[-1]["stdout"] = '"n_predict":0'
    del CASES[-1]["error"]
    case("model_is_directory", "not a regular file (it is a directory)",
         args=["-m", "{dir}", "--prompt-ids", "1", "-n", "1"])
    case("model_missing", "cannot open", args=["-m", "{dir}/no-such.gguf", "--prompt-ids", "1"])
    case("tokenize_directory_model", "no tokenizer.model, tokenizer.model.v3 or tokenizer.json",
         tool="mamba-tokenize", args=["--tokenizer", "{dir}", "-p", "a"])
    case("tokenize_bad_id", "is outside the vocabulary",
         tool="mamba-tokenize", args=["--tokenizer", "{good}", "--decode", "1,100000"])
    case("convert_directory_empty", "config.json", tool="mamba-convert",
         args=["{dir}", "-o", "{tmp}/x.gguf"])
    case("convert_file_not_dir", "", tool="mamba-convert", args=["{good}", "-o", "{tmp}/x.gguf"])


# ---- fuzzing seeds ------------------------------------------------------------------------

def spm_list_model():
    """The tiny model with a llama.cpp-style SentencePiece vocabulary (token lists, scores)."""
    g = tiny_model()
    g.kv = [x for x in g.kv if not x[0].startswith("tokenizer.")]
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    tokens += ["\u2581", "\u2581t", "he", "\u2581the", "a", "b", "c", "\u2581a", "ll", "o"]
    n = len(tokens)
    types = [2, 3, 3] + [6] * 256 + [1] * (n - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(n - 259)]
    g.add("tokenizer.ggml.model", STR, "llama")
    g.add("tokenizer.ggml.pre", STR, "default")
    g.add("tokenizer.ggml.tokens", ARR, (STR, tokens))
    g.add("tokenizer.ggml.scores", ARR, (F32, scores))
    g.add("tokenizer.ggml.token_type", ARR, (I32, types))
    g.add("tokenizer.ggml.bos_token_id", U32, 1)
    g.add("tokenizer.ggml.eos_token_id", U32, 2)
    g.add("tokenizer.ggml.add_bos_token", BOOL, True)
    # The embedding must have one row per token.
    find_tensor(g, "token_embd.weight")["ne"][1] = n
    t = find_tensor(g, "token_embd.weight")
    t["data"] = (t["data"] * 2)[:n * D_MODEL * 2]
    set_kv(g, "mamba.vocab_size", U32, n)
    return g


def hf_json_model():
    """The tiny model with an embedded tokenizer.json, as our converter writes it."""
    g = tiny_model()
    tokens, types, merges = vocabulary()
    tj = {"version": "1.0", "normalizer": {"type": "NFC"},
          "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                            "use_regex": True},
          "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True},
          "added_tokens": [{"id": len(tokens) - 1, "content": "<|endoftext|>", "single_word": False,
                            "lstrip": False, "rstrip": False, "normalized": False, "special": True}],
          "model": {"type": "BPE", "dropout": None, "unk_token": None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": False, "byte_fallback": False,
                    "vocab": {t: i for i, t in enumerate(tokens[:-1])}, "merges": merges}}
    g.add("tokenizer.huggingface.json", STR, json.dumps(tj))
    return g


def safetensors_bytes(tensors, metadata=None):
    """tensors: (name, dtype, shape, raw bytes) in order."""
    header, off = {}, 0
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def seeds():
    def put(target, name, data):
        d = os.path.join(SEEDS, target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())

    put("gguf", "mamba1_bpe_lists.gguf", tiny_model().bytes())
    put("gguf", "mamba1_spm_lists.gguf", spm_list_model().bytes())
    put("gguf", "mamba1_hf_json.gguf", hf_json_model().bytes())
    g = tiny_model()
    g.kv = [x for x in g.kv if not x[0].startswith("tokenizer.")]
    g.version = 2
    g.alignment = 64
    g.kv.insert(0, ("general.alignment", U32, 64))
    g.kv.append(("general.nested", ARR, (ARR, [(I16, [1, -2]), (U64, [3])])))
    g.kv.append(("general.bytes", ARR, (U8, [1, 2, 3])))
    g.kv.append(("general.f64", F64, 0.5))
    put("gguf", "mamba1_v2_align64_no_vocab.gguf", g.bytes())

    f32 = lambda vals: b"".join(struct.pack("<f", v) for v in vals)
    put("safetensors", "two_f32.safetensors",
        safetensors_bytes([("a", "F32", [2, 3], f32(range(6))), ("b", "F32", [4], f32([1, 2, 3, 4]))],
                          {"format": "pt"}))
    put("safetensors", "mixed_dtypes.safetensors",
        safetensors_bytes([("h", "F16", [2, 2], struct.pack("<4e", 1, 2, 3, 4)),
                           ("bf", "BF16", [2], b"\x80\x3f\x00\x40"),
                           ("d", "F64", [1], struct.pack("<d", 3.5)),
                           ("i", "I64", [2], struct.pack("<2q", 1, 2)),
                           ("s", "F32", [], f32([7])), ("e", "U8", [0], b"")]))
    put("safetensors", "empty.safetensors", safetensors_bytes([]))
    with open(os.path.join(ROOT, "tests/fixtures/models/falcon_mamba_bf16/hf/model.safetensors"), "rb") as f:
        put("safetensors", "falcon_mamba_bf16.safetensors", f.read())

    models = os.path.join(ROOT, "tests", "fixtures", "models")
    for m in sorted(os.listdir(models)):
        with open(os.path.join(models, m, "hf", "config.json")) as f:
            put("hf_config", m + ".json", f.read())
    put("hf_config", "python_infinity.json",
        '{"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 4, '
        '"head_dim": 32, "n_groups": 2, "state_size": 16, "vocab_size": 100, '
        '"time_step_limit": [0.0, Infinity], "expand": 2}')
    put("hf_config", "float_object.json",
        '{"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 1, "num_heads": 4, '
        '"head_dim": 32, "time_step_limit": [0.0, {"__float__": "Infinity"}]}')
    put("hf_config", "state_spaces.json",
        '{"d_model": 32, "n_layer": 2, "vocab_size": 50, "ssm_cfg": {"layer": "Mamba2", "d_state": 8,'
        ' "headdim": 16, "ngroups": 1}, "pad_vocab_size_multiple": 8, "tie_embeddings": true}')

    texts = ["Hello world", " The quick brown fox\n\tjumps  over\r\n", "<|endoftext|>a<s></s>",
             "caf\u00e9 na\u0131ve \u00c5ngstr\u00f6m \U0001F600\U0001F44D\U0001F3FD",
             "\u4f60\u597d\uff0c\u4e16\u754c \u0645\u0631\u062d\u0628\u0627 123 4567 x++ y--",
             "    indented   spaces      and 's 't 're 've 'm 'll 'd"]
    for i, t in enumerate(texts):
        for mode in (0, 1):
            put("tokenizer", "text%d_%s" % (i, "bpe" if mode == 0 else "spm"),
                bytes([mode]) + t.encode())
    put("tokenizer", "invalid_utf8", b"\x00ab\xff\xfe\xc3(\xe2\x82\xf0\x9f\x98")
    put("tokenizer", "ids_bpe", b"\x02" + struct.pack("<8i", 0, 1, 50, 187, 50276, 50277, -5, 9))
    put("tokenizer", "ids_spm", b"\x07" + struct.pack("<8i", 0, 1, 2, 3, 300, 1000, 32767, 32768))


def main():
    os.makedirs(BAD, exist_ok=True)
    for f in os.listdir(BAD):
        if f.endswith(".gguf"):
            os.remove(os.path.join(BAD, f))
    model_cases()
    prompt_cases()
    seeds()
    with open(os.path.join(BAD, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=1)
        f.write("\n")
    print("%d cases, %d bytes of files" % (len(CASES), sum(
        os.path.getsize(os.path.join(BAD, x)) for x in os.listdir(BAD))))


if __name__ == "__main__":
    sys.exit(main())
