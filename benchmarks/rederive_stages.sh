# Sourced by benchmarks/rederive_*.sh: OUT, FACEREP and `stage`, the resumable, timed step.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${FACEREP_DATA:?set FACEREP_DATA to the data folder (../shared/data)}"
OUT=${1:-work_dirs/rederive}
FACEREP=${FACEREP:-.venv/bin/facerep}
mkdir -p "$OUT"

stage() {  # stage NAME DONE_FILE CMD...: run CMD unless DONE_FILE exists, timing it into OUT/times.txt
  local name=$1 done_file=$2; shift 2
  if [[ -e $done_file ]]; then echo "skip $name ($done_file exists)"; return; fi
  local t0=$SECONDS
  "$@"
  echo "$name $((SECONDS - t0)) s" | tee -a "$OUT/times.txt"
}
