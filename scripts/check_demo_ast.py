#!/usr/bin/env python3
"""How often the bundled code model writes Python that parses.

For each of 50 function headers, mamba-cli completes the function greedily and by sampling
(--temp, a fixed --seed per header), from two kinds of prompt: the bare header
("def gcd(a, b):"), and the header with a one-line docstring, as code-completion benchmarks
give it. The completed function is the prompt plus the lines that follow while they are
indented or blank; it ends at the first line back at column 0. If generation stopped (token
limit) before the function ended, the last line, which may be cut mid-way, is dropped. Then
ast.parse decides.

    scripts/check_demo_ast.py [--cli build/bin/mamba-cli] [--model models/...gguf] [-n 256]
                              [--temp 0.8] [--show] [--json OUT]

Needs only Python 3 (no packages) and a built mamba-cli.
"""
import argparse
import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Function headers, each with a one-line docstring for the second kind of prompt.
HEADERS = [
    ('def fibonacci(n):', 'Return the n-th Fibonacci number.'),
    ('def factorial(n):', 'Return n factorial.'),
    ('def is_prime(n):', 'Return True if n is a prime number.'),
    ('def gcd(a, b):', 'Return the greatest common divisor of a and b.'),
    ('def reverse_string(s):', 'Return s reversed.'),
    ('def count_words(text):', 'Return a dict mapping each word of text to its count.'),
    ('def read_lines(path):', 'Return the lines of the file at path.'),
    ('def write_json(path, data):', 'Write data to path as JSON.'),
    ('def flatten(items):', 'Flatten a list of lists into one list.'),
    ('def chunks(seq, size):', 'Split seq into lists of at most size items.'),
    ('def merge_dicts(a, b):', 'Return a new dict with the items of a and b.'),
    ('def parse_int(value, default=0):', 'Convert value to an int, or return default.'),
    ('def clamp(x, lo, hi):', 'Limit x to the range [lo, hi].'),
    ('def mean(values):', 'Return the arithmetic mean of values.'),
    ('def median(values):', 'Return the median of values.'),
    ('def unique(items):', 'Return the distinct items, in order.'),
    ('def find_max(numbers):', 'Return the largest number.'),
    ('def binary_search(arr, target):', 'Return the index of target in sorted arr, or -1.'),
    ('def bubble_sort(arr):', 'Sort arr in place with bubble sort.'),
    ('def transpose(matrix):', 'Return the transpose of a list of rows.'),
    ('def dot(u, v):', 'Return the dot product of two vectors.'),
    ('def norm(vector):', 'Return the Euclidean norm of vector.'),
    ('def normalize_path(path):', 'Return path made absolute and normalized.'),
    ('def get_extension(filename):', 'Return the extension of filename.'),
    ('def to_snake_case(name):', 'Convert name to snake_case.'),
    ('def camel_to_snake(name):', 'Convert a CamelCase name to snake_case.'),
    ('def strip_comments(source):', 'Remove the comments from Python source.'),
    ('def split_words(line):', 'Split line into words.'),
    ('def load_config(filename):', 'Load a configuration file.'),
    ('def save_pickle(obj, path):', 'Save obj to path with pickle.'),
    ('def list_files(directory):', 'Return the files in directory.'),
    ('def make_dirs(path):', 'Create path and its parents.'),
    ('def timestamp():', 'Return the current time as a string.'),
    ('def retry(func, attempts=3):', 'Call func, retrying on failure.'),
    ('def memoize(func):', 'Cache the results of func.'),
    ('def validate_email(address):', 'Return True if address looks like an e-mail address.'),
    ('def encode_base64(data):', 'Return data encoded as base64.'),
    ('def hash_file(path):', 'Return the SHA-256 hex digest of a file.'),
    ('def histogram(values, bins=10):', 'Count values in equal-width bins.'),
    ('def moving_average(values, window):', 'Return the moving average of values.'),
    ('def cumulative_sum(values):', 'Return the running totals of values.'),
    ('def pairwise(iterable):', 'Return successive overlapping pairs.'),
    ('def group_by(items, key):', 'Group items by key(item).'),
    ('def invert_dict(d):', 'Swap the keys and values of d.'),
    ('def is_palindrome(word):', 'Return True if word reads the same backwards.'),
    ('def matrix_multiply(a, b):', 'Multiply two matrices given as lists of rows.'),
    ('def linspace(start, stop, num):', 'Return num evenly spaced numbers from start to stop.'),
    ('def format_bytes(size):', 'Format a size in bytes for humans.'),
    ('def parse_args(argv=None):', 'Parse the command line.'),
    ('def main():', 'Run the program.'),
]


def complete(cli, model, prompt, n, temp, seed, threads):
    cmd = [cli, "-m", model, "-p", prompt, "-n", str(n), "--temp", str(temp),
           "--seed", str(seed), "--json"]
    if threads:
        cmd += ["-t", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {out.stderr.strip()}")
    j = json.loads(out.stdout)
    return j["text"], j["finish_reason"]


def the_function(prompt, completion, finish_reason):
    """The prompt and the body as generated; ended: whether the function was finished."""
    lines = completion.split("\n")
    body, ended = [], False
    for line in lines:
        if line.strip() and not line[0].isspace():
            ended = True
            break
        body.append(line)
    if not ended and finish_reason == "length" and body:
        body.pop()  # may stop mid-line
    return prompt + "\n".join(body) + "\n", ended


def parses(source):
    try:
        ast.parse(source)
        return True
    except (SyntaxError, ValueError):
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bin", "mamba-cli"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "mamba2-code-19m-f16.gguf"))
    ap.add_argument("-n", type=int, default=256, help="tokens to generate per completion")
    ap.add_argument("--temp", type=float, default=0.8, help="temperature of the sampled run")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--show", action="store_true", help="print every completed function")
    ap.add_argument("--json", help="write every completion and its verdict to this file")
    args = ap.parse_args()

    results = {}
    for kind in ("header", "header + docstring"):
        for mode, temp in (("greedy", 0.0), (f"sampled, temp {args.temp:g}", args.temp)):
            name = f"{kind}, {mode}"
            rows = []
            for i, (header, doc) in enumerate(HEADERS):
                prompt = header + "\n"
                if kind != "header":
                    prompt += f'    """{doc}"""\n'
                text, reason = complete(args.cli, args.model, prompt, args.n, temp, 1000 + i,
                                        args.threads)
                source, ended = the_function(prompt, text, reason)
                ok = parses(source)
                rows.append({"prompt": prompt, "completion": text, "function": source,
                             "ended": ended, "parses": ok})
                if args.show:
                    print(f"---- {name} #{i}: {'parses' if ok else 'DOES NOT PARSE'}\n{source}")
            results[name] = rows
            n_ok = sum(r["parses"] for r in rows)
            n_ended = sum(r["ended"] for r in rows)
            print(f"{name:40} {n_ok:2}/{len(rows)} parse with ast "
                  f"({n_ended}/{len(rows)} functions ended within {args.n} tokens)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
