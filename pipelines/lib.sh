# Shared by the pipelines: run a cimtool stage unless its artifact already exists and verifies.
# Source it; it expects `cimtool` on PATH.

# stage NAME OUT cimtool-args...
#   Skips when OUT verifies (manifest, payload hashes, inputs unchanged: `cimtool inspect
#   --hashes-only`); otherwise runs `cimtool cimtool-args... --out OUT --force`.
stage() {
  local name=$1 out=$2
  shift 2
  if [[ -d $out ]] && cimtool inspect "$out" --hashes-only --json >/dev/null 2>&1; then
    echo "[skip] $name: $out exists and verifies" >&2
    return 0
  fi
  echo "[run ] $name → $out" >&2
  local t0=$SECONDS
  cimtool "$@" --out "$out" --force
  echo "[done] $name in $((SECONDS - t0)) s" >&2
}
