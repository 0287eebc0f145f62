#!/usr/bin/env bash
# Regenerates tests/golden/minilm_embeddings.json: reference sentence embeddings of
# all-MiniLM-L6-v2 computed by the model's reference code, sentence-transformers, on CPU.
#
#   bench/make-minilm-golden.sh      # ~2 min the first time (venv), ~30 s after
#
# - Venv: ${FRUGAL_CACHE:-$HOME/.cache/frugal}/venv-st (outside the repo; ~5.5 GB), every
#   package pinned below and installed with --no-deps, rebuilt only when the pins change.
#   torch comes from PyPI, whose x86_64 Linux wheel is the CUDA build: libtorch_python.so
#   and libtorch.so link libtorch_cuda.so, which links libcudart/libcublas/libcudnn/...,
#   so `import torch` fails without the nvidia-*-cu12 wheels (tried: torch --no-deps
#   stops with "libcublas.so.*[0-9] not found"). They are installed, and torch runs on CPU.
# - Model: the cached folder (scripts/fetch-assets.sh minilm) lacks 2_Normalize/ although
#   modules.json lists the Normalize module; the model is loaded from a temporary copy
#   (symlinks) with an empty 2_Normalize/ added. sentence-transformers 3.3.1 would also
#   load without it (Normalize needs no files), older versions need the folder.
# - Sentences: 16 hand-written ones (edge cases; one exceeds 256 tokens, so truncation is
#   exercised) and the first 2 sentences of the first file of each of the 15 Brown genres,
#   detagged exactly as frugal-formats' brown::parse_tagged/detokenize do.
# - Each sentence is encoded alone (no padding). token_ids are what the model itself feeds
#   BERT: model.tokenize([text]) (text .strip()ped, [CLS] ... [SEP], truncated to 256).
#   Embeddings are the normalized 384 floats, rounded to 7 significant digits.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

REQUIREMENTS="\
torch==2.5.1
transformers==4.46.3
sentence-transformers==3.3.1
tokenizers==0.20.3
safetensors==0.8.0
huggingface_hub==0.36.2
numpy==2.4.6
scipy==1.17.1
scikit-learn==1.9.1
sentencepiece==0.2.0
nvidia-cublas-cu12==12.4.5.8
nvidia-cuda-cupti-cu12==12.4.127
nvidia-cuda-nvrtc-cu12==12.4.127
nvidia-cuda-runtime-cu12==12.4.127
nvidia-cudnn-cu12==9.1.0.70
nvidia-cufft-cu12==11.2.1.3
nvidia-curand-cu12==10.3.5.147
nvidia-cusolver-cu12==11.6.1.9
nvidia-cusparse-cu12==12.3.1.170
nvidia-nccl-cu12==2.21.5
nvidia-nvjitlink-cu12==12.4.127
nvidia-nvtx-cu12==12.4.127
triton==3.1.0
sympy==1.13.1
mpmath==1.3.0
networkx==3.6.1
filelock==4.3.1
fsspec==2026.9.0
Jinja2==3.1.6
MarkupSafe==3.0.4
typing_extensions==4.16.0
packaging==26.4
PyYAML==6.0.4
regex==2026.11.19
requests==2.34.2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
urllib3==2.8.0
tqdm==4.70.1
hf-xet==1.8.0
pillow==13.0.0
joblib==1.6.0
threadpoolctl==3.8.0
narwhals==2.29.0
cloudpickle==3.1.3
"

die() { printf 'error: make-minilm-golden: %s\n' "$*" >&2; exit 1; }
trap 'printf "error: make-minilm-golden: command failed (exit %s) at line %s: %s\n" $? $LINENO "$BASH_COMMAND" >&2' ERR

CACHE="${FRUGAL_CACHE:-${HOME:?HOME is not set; set FRUGAL_CACHE}/.cache/frugal}"
VENV="$CACHE/venv-st"
STAMP="$VENV/.frugal-requirements"
BASE="${FRUGAL_PYTHON:-python3}"
OUT=tests/golden/minilm_embeddings.json

scripts/fetch-assets.sh minilm brown >&2
MINILM="$CACHE/minilm"
BROWN="$CACHE/brown"

# ------------------------------------------------------------------------------ venv
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(<"$STAMP")"$'\n' == "$REQUIREMENTS" ]]; then
  printf 'make-minilm-golden: reusing %s\n' "$VENV" >&2
else
  command -v "$BASE" >/dev/null 2>&1 || die "'$BASE' not found: install Python 3.11-3.13 or set FRUGAL_PYTHON"
  "$BASE" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' ||
    die "$("$BASE" --version 2>&1): the pins need Python 3.11-3.13 (numpy 2.4, torch 2.5.1); set FRUGAL_PYTHON"
  printf 'make-minilm-golden: creating %s (torch, transformers, sentence-transformers; ~3 GB download)\n' "$VENV" >&2
  rm -rf -- "$VENV"
  mkdir -p -- "$CACHE"
  "$BASE" -m venv "$VENV"
  printf '%s' "$REQUIREMENTS" > "$VENV/requirements.txt"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --no-deps \
        -r "$VENV/requirements.txt" > "$VENV/pip.log" 2>&1; then
    tail -n 15 "$VENV/pip.log" | sed 's/^/  pip: /' >&2
    die "pip install into $VENV failed (see above; full log $VENV/pip.log); re-run to retry"
  fi
  "$VENV/bin/python" -m pip check >&2 || die "the pinned requirements are inconsistent; fix REQUIREMENTS in $0"
  "$VENV/bin/python" -c 'import torch, sentence_transformers; torch.ones(2) @ torch.ones(2)' ||
    die "the venv was built but 'import torch, sentence_transformers' fails (see above)"
  printf '%s' "$REQUIREMENTS" > "$STAMP"   # written last: marks the venv complete
fi
PY="$VENV/bin/python"

# ------------------------------------------------------------------ model folder copy
TMP="$(mktemp -d)"
trap 'rm -rf -- "$TMP"' EXIT
cp -rs -- "$(cd "$MINILM" && pwd)" "$TMP/minilm"   # symlinks to the cached files
mkdir -p -- "$TMP/minilm/2_Normalize"               # listed in modules.json; holds no files

# ---------------------------------------------------------------------------- encode
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" - "$TMP/minilm" "$BROWN" "$TMP/out.json" <<'PYEOF'
import json, platform, sys, time
import numpy as np, torch, transformers, tokenizers, sentence_transformers
from sentence_transformers import SentenceTransformer

model_dir, brown_dir, out_path = sys.argv[1:4]
t0 = time.time()

# --- Brown detagging: mirror of frugal-formats src/brown.rs (parse_tagged + detokenize).
ATTACH_LEFT = {".", ",", ";", ":", "?", "!", ")", "]", "'s", "'", "n't", "'re", "'ll", "'d", "'ve", "'m"}

def detokenize(words):
    out, glue_next = "", False
    for w in words:
        attach_left = attach_right = False
        if w == "``":
            w, attach_right = '"', True
        elif w == "''":
            w, attach_left = '"', True
        elif w in ("(", "["):
            attach_right = True
        elif w in ATTACH_LEFT:
            attach_left = True
        if out and not attach_left and not glue_next:
            out += " "
        out += w
        glue_next = attach_right
    return out

def brown_sentences(path, n):
    text = open(path, encoding="utf-8").read()
    out = []
    for line in text.split("\n"):           # Rust str::lines: split on \n, drop a trailing \r
        if line.endswith("\r"):
            line = line[:-1]
        words = []
        for tok in line.split():
            word, sep, tag = tok.rpartition("/")
            assert sep and word and tag, f"{path}: bad token {tok!r}"
            words.append(word)
        if words:
            out.append(detokenize(words))
            if len(out) == n:
                return out
    raise SystemExit(f"{path}: fewer than {n} sentences")

LONG = (
    "The river town of Millbrook grew up around a ferry crossing in the early eighteenth century, "
    "when traders carrying furs, salt and iron tools needed a safe place to cross the wide, slow water. "
    "At first there were only a few log cabins, a tavern and a blacksmith's forge, but within fifty years "
    "the settlement had a church, a schoolhouse, two mills and a market square where farmers sold grain, "
    "apples, cheese and wool every Saturday morning. The arrival of the railway in 1853 changed everything. "
    "Goods that had taken a week to reach the coast by barge could now travel there in a single day, and "
    "the population doubled, then doubled again. Brick warehouses replaced the wooden sheds along the quay; "
    "a bank, a newspaper and a small theatre opened on the main street. Not everyone welcomed the change. "
    "Older residents complained about the noise, the smoke and the strangers who came looking for work in "
    "the new factories, and several families who had farmed the valley for generations sold their land and "
    "moved further west. During the great flood of 1911 the river rose eleven feet in two nights, destroying "
    "the lower town, sweeping away the old ferry landing and damaging almost every building near the water. "
    "Rebuilding took nearly a decade. The townspeople raised money for a stone embankment, planted willows "
    "along the banks and moved the market square to higher ground, where it remains today. In the second half "
    "of the twentieth century the factories closed one by one, the railway station became a museum, and "
    "Millbrook slowly turned into a quiet place known mainly for its annual music festival, its bookshops "
    "and the long walking path that follows the river through meadows, orchards and woods toward the hills "
    "on the horizon. Visitors who stay the night often say that the sound of the water is the last thing they "
    "remember before falling asleep and the first thing they hear when they wake up."
)

HAND = [
    "a",
    "Hello world!",
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a sleepy dog.",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates by 0.75 percentage points.",
    "Machine learning models convert sentences into dense vectors that capture their meaning.",
    "A neural network maps text to numerical embeddings which represent semantics.",
    "Café, naïve résumé: Zürich, São Paulo and Kraków were visited by the crêpe-loving señora Ångström.",
    "MiXeD CaSe TeXt, ALL CAPS SHOUTING, and lowercase: DoEs It MaTtEr? iPhone McDonald's eBay",
    "Prices: $1,299.99 (was $1,499.00) - save 13%! Call 555-0123 before 31/12/2024, 11:59 p.m.",
    "Wait... what?!? \"Quoted\" text; semi-colons; [brackets] {braces} <angles> & ampersands #hash @at ~tilde ^caret * / \\ | _under_score_",
    "  Leading and trailing spaces,\ttabs,\u00a0a no-break space\nand a newline.  ",
    "東京は日本の首都です。I ❤️ 🍣 and emoji 😀 — “curly quotes” and em—dashes…",
    "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious pneumonoultramicroscopic",
    "It's 3.14159, isn't it? I'd've said 42%... they're we'll you've I'm",
    LONG,
]
GENRE_FILES = ["ca01", "cb01", "cc01", "cd01", "ce01", "cf01", "cg01", "ch01", "cj01",
               "ck01", "cl01", "cm01", "cn01", "cp01", "cr01"]
items = [("hand", t) for t in HAND]
for f in GENRE_FILES:
    for i, s in enumerate(brown_sentences(f"{brown_dir}/{f}", 2)):
        items.append((f"brown {f} sentence {i + 1}", s))

model = SentenceTransformer(model_dir, device="cpu")
model.eval()
names = [type(m).__name__ for m in model]
assert names == ["Transformer", "Pooling", "Normalize"], names
assert model.max_seq_length == 256, model.max_seq_length

entries, embs = [], []
with torch.inference_mode():
    for src, text in items:
        ids = model.tokenize([text])["input_ids"][0].tolist()
        emb = model.encode([text], batch_size=1, convert_to_numpy=True, show_progress_bar=False)[0]
        assert emb.shape == (384,) and emb.dtype == np.float32
        embs.append(emb)
        entries.append({"source": src, "text": text, "token_ids": ids,
                        "embedding": [float(f"{x:.7g}") for x in emb.tolist()]})
E = np.stack(embs)

# --- Sanity checks.
norms = np.linalg.norm(E.astype(np.float64), axis=1)
assert np.all(np.abs(norms - 1) < 1e-5), norms
lens = [len(e["token_ids"]) for e in entries]
assert max(lens) == 256 and lens[HAND.index(LONG)] == 256, lens
assert all(e["token_ids"][0] == 101 and e["token_ids"][-1] == 102 for e in entries)
# Independent recomputation with plain transformers: BertModel + mean pooling + L2 norm.
tok = transformers.AutoTokenizer.from_pretrained(model_dir)
bert = transformers.AutoModel.from_pretrained(model_dir).eval()
worst = 0.0
with torch.inference_mode():
    for e, emb in zip(entries, embs):
        enc = tok(e["text"].strip(), truncation=True, max_length=256, return_tensors="pt")
        assert enc["input_ids"][0].tolist() == e["token_ids"]
        h = bert(**enc).last_hidden_state[0]
        v = torch.nn.functional.normalize(h.mean(0), dim=0).numpy()
        worst = max(worst, float(np.abs(v - emb).max()))
assert worst < 1e-5, worst
rounded = np.array([e["embedding"] for e in entries], dtype=np.float64)
round_err = float(np.abs(rounded - E).max())

cos = lambda a, b: float(E[a] @ E[b])
print(f"{len(entries)} sentences, token counts {min(lens)}..{max(lens)}; |norm-1| max {np.abs(norms - 1).max():.2e}; "
      f"max |ST - plain transformers| {worst:.2e}; max rounding error {round_err:.2e}", file=sys.stderr)
for a, b in [(2, 3), (5, 6), (2, 4), (1, 0), (16, 17)]:
    print(f"  cos = {cos(a, b):+.4f}  {items[a][1][:50]!r} vs {items[b][1][:50]!r}", file=sys.stderr)

made_by = (f"bench/make-minilm-golden.sh: sentence-transformers {sentence_transformers.__version__} "
           f"SentenceTransformer(<copy of $FRUGAL_CACHE/minilm with an empty 2_Normalize/>, device='cpu')"
           f".encode([text]) one sentence at a time (no padding); token_ids = model.tokenize([text])['input_ids'] "
           f"(text stripped, truncation at max_seq_length 256); transformers {transformers.__version__}, "
           f"tokenizers {tokenizers.__version__}, torch {torch.__version__} on CPU ({torch.get_num_threads()} threads), "
           f"Python {platform.python_version()}; embeddings rounded to 7 significant digits")
with open(out_path, "w", encoding="utf-8") as f:
    f.write("{\n")
    for k, v in [("made_by", made_by), ("model", "all-MiniLM-L6-v2"), ("normalized", True),
                 ("max_seq_length", 256), ("dim", 384)]:
        f.write(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},\n")
    f.write(' "sentences": [\n')
    for i, e in enumerate(entries):
        sep = "," if i + 1 < len(entries) else ""
        f.write("  " + json.dumps(e, ensure_ascii=False, separators=(",", ":")) + sep + "\n")
    f.write(" ]\n}\n")
with open(out_path, encoding="utf-8") as f:
    assert json.load(f)["sentences"][-1]["token_ids"] == entries[-1]["token_ids"]
print(f"encoded in {time.time() - t0:.1f} s", file=sys.stderr)
PYEOF
mkdir -p -- "$(dirname "$OUT")"
cp -- "$TMP/out.json" "$OUT"
printf 'make-minilm-golden: wrote %s (%s bytes)\n' "$OUT" "$(wc -c < "$OUT")" >&2
