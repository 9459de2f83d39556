"""GPT-J's MLPerf lengths in BPE tokens, from the published word and character counts
(issue 24; the numbers `simulator/benchmark_workloads.py` uses for `mlperf-gptj`).

  .venv/bin/python benchmarks/mlperf_gptj_lengths.py [--replies 4000]

No published figure gives GPT-J's MLPerf input or output length in model tokens, so they are
converted from what is published:

- input: CNN/DailyMail articles average 781 word tokens (See et al., ACL 2017; Stanford
  CoreNLP's PTB tokenization: words, punctuation and clitics each a token). MLPerf wraps each
  article in an instruction template (mlcommons/inference language/gpt-j/dataset.py
  `PROMPT_DICT["prompt_input"]`, instruction "Summarize the following news article:" from
  download_cnndm.py). Input mean = 781 x (BPE tokens per PTB word token) + the template's
  own BPE tokens.
- output: the reference run's generated summaries total GEN_LEN = 4,016,878 characters over
  the 13,368 samples (mlcommons/inference tools/submission/submission_checker.py, gptj-99
  accuracy target; evaluation.py sums `len(pred)` of the decoded text). Output mean =
  4,016,878 / 13,368 / (characters per BPE token).

The two ratios are measured on English prose of the shared data: ShareGPT assistant replies
(`llm/sharegpt`), prose paragraphs only (no code, lists or headings, ASCII, >= 40 words).
The BPE is cl100k_base (`servecast.tokens`, the tokenizer available offline here); GPT-J's
own is GPT-2's 50k BPE, which no package here bundles. Check against the one published
token count: 399 of the 13,368 GPT-J prompts exceed 1,919 GPT-2 BPE tokens
(mlcommons/inference issue #1384), printed beside the share the workload draws above 1,919.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time

from servecast.config import data_dir
from servecast.simulator import workloads
from servecast.tokens import count_tokens

ARTICLE_WORDS = 781.0  # See et al. (ACL 2017), CNN/DailyMail mean article length
GEN_LEN_CHARS = 4_016_878  # submission_checker.py, gptj-99 / gptj-99.9 GEN_LEN
SAMPLES = 13_368  # CNN/DailyMail validation split, MLPerf's GPT-J dataset
TRUNCATED = 399  # prompts longer than 1,919 tokens (mlcommons/inference issue #1384)
INPUT_MAX = 1919
# mlcommons/inference language/gpt-j/dataset.py PROMPT_DICT["prompt_input"] with
# download_cnndm.py's instruction; the article goes where {input} is.
TEMPLATE = ("Below is an instruction that describes a task, paired with an input that "
            "provides further context. Write a response that appropriately completes the "
            "request.\n\n### Instruction:\nSummarize the following news article:\n\n"
            "### Input:\n{input}\n\n### Response:")
# PTB-style word tokens: clitics, words (hyphens, decimals, thousands kept), each other mark
PTB = re.compile(r"n't\b|'(?:s|re|ll|d|ve|m)\b|\w+(?:[-.,']\w+)*|[^\w\s]")
NOT_PROSE = re.compile(r"```|^\s*(?:[-*#>|]|\d+[.)])", re.M)


def fail(message: str) -> None:
    """Bad input: the message on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def prose(replies: int) -> list[str]:
    """English prose paragraphs from the first `replies` ShareGPT assistant replies."""
    path = data_dir() / "llm" / "sharegpt" / "ShareGPT_V3_part1.json.gz"
    if not path.is_file():
        fail(f"{path}: not found; set SERVECAST_DATA to the shared data folder")
    with gzip.open(path, "rt") as f:
        convs = json.load(f)
    out: list[str] = []
    seen = 0
    for conv in convs:
        for turn in conv.get("conversations", []):
            if turn.get("from") != "gpt" or "```" in turn.get("value", ""):
                continue
            seen += 1
            for para in turn["value"].split("\n\n"):
                para = para.strip()
                if (para.isascii() and not NOT_PROSE.search(para)
                        and len(para.split()) >= 40):
                    out.append(para)
            if seen >= replies:
                return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replies", type=int, default=4000,
                    help="ShareGPT assistant replies to read prose paragraphs from")
    args = ap.parse_args()
    t0 = time.perf_counter()
    paras = prose(args.replies)
    if not paras:
        fail(f"--replies {args.replies}: no prose paragraphs in that many replies; "
             "give a larger count")
    words = sum(len(PTB.findall(p)) for p in paras)
    chars = sum(len(p) for p in paras)
    bpe = sum(count_tokens(paras))
    (template,) = count_tokens([TEMPLATE.format(input="")])
    per_word, per_token = bpe / words, chars / bpe
    input_mean = ARTICLE_WORDS * per_word + template
    output_mean = GEN_LEN_CHARS / SAMPLES / per_token
    print(f"prose: {len(paras)} paragraphs, {words} PTB word tokens, {bpe} BPE tokens, "
          f"{chars} characters")
    print(f"BPE tokens per PTB word token: {per_word:.4f}")
    print(f"characters per BPE token: {per_token:.4f}")
    print(f"template BPE tokens (without the article): {template}")
    print(f"input mean: {ARTICLE_WORDS:.0f} x {per_word:.4f} + {template} = "
          f"{input_mean:.1f} tokens")
    print(f"output mean: {GEN_LEN_CHARS} / {SAMPLES} / {per_token:.4f} = "
          f"{output_mean:.1f} tokens")
    print(f"published: {TRUNCATED} / {SAMPLES} = {TRUNCATED / SAMPLES:.1%} of prompts "
          f"> {INPUT_MAX} tokens")
    p, _ = workloads.lengths("mlperf-gptj", 20000, seed=3)
    print(f"workload mlperf-gptj draws: {(p >= INPUT_MAX).mean():.1%} at the "
          f"{INPUT_MAX}-token limit, mean {p.mean():.1f}")
    print(f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
