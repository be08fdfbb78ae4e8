#!/usr/bin/env bash
# Reproduce the PBS curves of docs/consistency.md in the simulation (Bailis et al.,
# VLDB 2012: N=3, W exponential with mean 10 ms or 0.25 ms, A=R=S exponential with
# mean 1 ms), for (R,W) = (1,1), (2,1), (1,2), (2,2); then draw one plot per latency.
#
#   scripts/pbs_reproduce.sh [TRIALS] [JOBS]      # defaults: 10000 trials per t, 2 jobs
#
# (R,W) = (1,1) runs 4 x TRIALS per t, (2,1) and (1,2) 2 x TRIALS. About 40 minutes
# with the defaults on two busy cores.
#
# Writes docs/data/pbs/*.json and docs/img/consistency-*.png. Deterministic: the same
# TRIALS give the same numbers whatever JOBS is.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${1:-10000}
JOBS=${2:-2}
OUT=docs/data/pbs
IMG=docs/img
mkdir -p "$OUT" "$IMG"

SLOW="W=exp:10,A=exp:1,R=exp:1,S=exp:1"
FAST="W=exp:0.25,A=exp:1,R=exp:1,S=exp:1"
T_SLOW="0,1,2,5,10,20,30,45,65,100"
T_FAST="0,0.5,1,2,3,5,10"

run() {  # name latency t r w trials
    python -m ringkv experiment staleness --sim --n 3 --r "$4" --w "$5" --latency "$2" \
        --t "$3" --trials "$6" --jobs "$JOBS" --predict-trials 1000000 \
        --json "$OUT/$1.json"
}

# The paper's main setting gets the most trials: the RMSE of a run is bounded below by
# its sampling error, sqrt(mean p(1-p) / trials), about 0.35 points at 10000 trials.
if [ "${SKIP_SLOW:-}" != 1 ]; then
    run slow-r1w1 "$SLOW" "$T_SLOW" 1 1 $((TRIALS * 4))
    run slow-r2w1 "$SLOW" "$T_SLOW" 2 1 $((TRIALS * 2))
    run slow-r1w2 "$SLOW" "$T_SLOW" 1 2 $((TRIALS * 2))
fi
run slow-r2w2 "$SLOW" "$T_SLOW" 2 2 $((TRIALS / 5))
run fast-r1w1 "$FAST" "$T_FAST" 1 1 "$TRIALS"
run fast-r2w1 "$FAST" "$T_FAST" 2 1 $((TRIALS / 2))
run fast-r1w2 "$FAST" "$T_FAST" 1 2 $((TRIALS / 2))

# k-staleness right after k back-to-back writes (R=W=1).
mkdir -p docs/data/k
python -m ringkv experiment staleness --sim --n 3 --r 1 --w 1 --latency "$SLOW" --t 0 \
    --k 1,2,3,5 --trials "$TRIALS" --jobs "$JOBS" --predict-trials 200000 \
    --json docs/data/k/k-r1w1.json

python -m ringkv experiment plot "$OUT"/slow-*.json --out "$IMG/consistency-w10.png" \
    --title "N=3, W=exp(10 ms), A=R=S=exp(1 ms): simulation (dots) vs WARS (lines)"
python -m ringkv experiment plot "$OUT"/fast-*.json --out "$IMG/consistency-w025.png" \
    --title "N=3, W=exp(0.25 ms), A=R=S=exp(1 ms): simulation (dots) vs WARS (lines)"
