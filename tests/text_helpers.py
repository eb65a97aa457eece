"""Small real-text corpora for tests: English-like prose, Python-like code, number tables,
and "novels" whose chapters carry src = "NOVEL#chapter"."""

import json
import os
import random

WORDS = ("the a of to and in that was her his she he it for had not as with be you at him my "
         "which by on have all this so but from were they no said could would been very mrs miss").split()


def sentences(rng, n):
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "." for _ in range(n))


def write_jsonl(path, docs):
    with open(path, "w") as f:
        for text, src in docs:
            f.write(json.dumps({"text": text, "src": src}) + "\n")


def tiny_corpus(directory):
    rng = random.Random(0)
    os.makedirs(directory)
    code = lambda i: "\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(30))  # noqa: E731
    write_jsonl(os.path.join(directory, "code_python.jsonl"), [(code(i), f"c{i}.py") for i in range(40)])
    write_jsonl(os.path.join(directory, "quotes_en.jsonl"), [(sentences(rng, 8), f"q{i}") for i in range(40)])
    numbers = lambda: "\n".join(" ".join(str(rng.randint(0, 99)) for _ in range(8)) for _ in range(20))  # noqa: E731
    write_jsonl(os.path.join(directory, "tables.jsonl"), [(numbers(), f"t{i}") for i in range(40)])
    novels = ["PRIDE AND PREJUDICE", "SENSE AND SENSIBILITY", "Persuasion", "EMMA"]
    write_jsonl(os.path.join(directory, "novels_austen.jsonl"),
                [(sentences(rng, 30), f"{novel}#{c}") for novel in novels for c in range(6)])
