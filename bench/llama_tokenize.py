"""llama-tokenize's ids, for the golden scripts (make-golden-gemma3.sh, make-golden-pre.sh):
`ids` runs the tool on a string or a file (no special-token parsing, BOS only when asked) and
`summary` keeps a long list's count, first 64 ids and the sha256 of its JSON — what
crates/frugal-eval/tests/common's `check_summary` compares."""
import hashlib
import json
import subprocess


def ids(tool, model, text=None, file=None, bos=False):
    src = ["-f", file] if file else ["-p", text]
    out = subprocess.run([tool, "-m", model, *src, "--ids", "--log-disable", "--no-parse-special",
                          *([] if bos else ["--no-bos"])],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def summary(v):
    return {"n_tokens": len(v), "first_64": v[:64],
            "sha256_ids": hashlib.sha256(json.dumps(v).encode()).hexdigest()}
