#!/usr/bin/env bash
# The Austen experiments: 3 regimes x 5 methods x 2 seeds on source domains, and DGA,
# importance sampling and uniform on 16 k-means clusters of the generic mix; then the report.
#
#   examples/austen/run_all.sh                 # full suite, a few hours on 2 CPU cores
#   examples/austen/run_all.sh --quick         # smoke run: tiny model, 20 iterations, 1 seed
#
# Environment: WORK (default runs/austen or runs/austen-quick), CORPUS_DIR (an existing
# corpus of <domain>.jsonl; default: built from packages, in the full mode by
# tools/build_corpus.py with its default cap of 4 M characters per domain), SEEDS (default "1 2"),
# REPORT (default docs/results.md; the quick mode writes into WORK).
# Finished runs are skipped, so an interrupted suite resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1

if (( QUICK )); then
    WORK=${WORK:-runs/austen-quick}
    SEEDS=${SEEDS:-1}
    REPORT=${REPORT:-$WORK/results.md}
    RUN_ARGS=(--model tiny --train-iters 20 --eval-interval 10 --global-batch-size 8 --micro-batch-size 2)
    PREPARE_ARGS=(--vocab-size 2048 --max-chars-per-domain 300000 --embedder tfidf --max-docs 200 --clusters 16)
else
    WORK=${WORK:-runs/austen}
    SEEDS=${SEEDS:-"1 2"}
    REPORT=${REPORT:-docs/results.md}
    RUN_ARGS=(--model small --train-iters 200 --eval-interval 25)
    PREPARE_ARGS=(--vocab-size 8192 --embedder minilm --max-docs 1500 --clusters 16)
fi
if (( ! QUICK )) && [[ -z "${CORPUS_DIR:-}" ]]; then
    CORPUS_DIR=$WORK/corpus
    python tools/build_corpus.py --output-dir "$CORPUS_DIR" \
        --domains scripture_kjv,drama_shakespeare,poetry_milton,quotes_en,wordnet_glosses,docs_python,code_python,novels_austen
fi
[[ -n "${CORPUS_DIR:-}" ]] && PREPARE_ARGS+=(--corpus-dir "$CORPUS_DIR")

python examples/austen/prepare.py --work-dir "$WORK" --importance "${PREPARE_ARGS[@]}"
PREPARED="$WORK/prepared.json"

for regime in plenty token-limited few-specific; do
    for method in uniform natural importance dga dga-ema; do
        for seed in $SEEDS; do
            python examples/austen/run.py --prepared "$PREPARED" --method "$method" --regime "$regime" \
                --seed "$seed" --out "$WORK/runs/sources/$regime/$method/seed$seed" "${RUN_ARGS[@]}"
        done
    done
done

# Domains from clustering: the 16 k-means clusters of the generic mix replace the sources.
for method in uniform importance dga-ema; do
    python examples/austen/run.py --prepared "$PREPARED" --method "$method" --regime plenty --domains clusters \
        --seed 1 --out "$WORK/runs/clusters/plenty/$method/seed1" "${RUN_ARGS[@]}"
done

python examples/austen/report.py --work-dir "$WORK" --output "$REPORT"
