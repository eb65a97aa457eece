#!/usr/bin/env bash
# The experiments of docs/results.md, then the report. Each phase is a group of tables:
#
#   first      the first experiments: 3 regimes (plenty, token-limited, few-specific) x 5 methods
#              (uniform, natural, importance, DGA and DGA + EMA in the paper's plain form) x 2
#              seeds on the 7 source domains, and uniform, importance, DGA + EMA on 16 clusters
#   variants   DGA's score (raw, adam, cosine) with and without step control, and probe size
#              against update frequency; Austen target, 7 source domains, 3 seeds, 2 regimes
#              (the main variants also in a third)
#   large-k    k-means clusters of the generic mix as domains (k = 64 and 256): DGA over the
#              clusters and over 16 base distributions of them, against uniform
#   scale      a 2,048-token vocabulary and 3x longer training, so that uniform ends well below
#              the unigram baseline: uniform, natural, importance, DGA and DGA + EMA, 2 regimes, 2 seeds
#   targets    two more targets (Python documentation, Go source), each with 6 generic
#              domains of which one or two are plainly closest to it
#
#   examples/austen/run_all.sh                  # everything, about 11 hours on 2 CPU cores
#   PHASES="variants" examples/austen/run_all.sh   # some phases (the report covers every finished run)
#   examples/austen/run_all.sh --quick          # smoke run: tiny model, 60 iterations, 1 seed
#
# Environment: WORK (default runs, or runs/austen-quick), CORPUS_DIR (an existing corpus of
# <domain>.jsonl; default: built from packages by tools/build_corpus.py with its default cap of
# 4 M characters per domain), SEEDS (default "1 2 3"; the scale and target phases use the
# first two), REPORT (default docs/results.md when every phase runs; with some phases, or in
# the quick mode, WORK/results.md, so that a partial run does not overwrite the page).
# Finished runs are skipped, so an interrupted suite resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
ALL_PHASES="first variants large-k scale targets headroom"
PHASES=${PHASES:-$ALL_PHASES}
GENERIC=scripture_kjv,drama_shakespeare,poetry_milton,quotes_en,wordnet_glosses,docs_python,code_python

BUILD_ARGS=()
if (( QUICK )); then
    WORK=${WORK:-runs/austen-quick}
    BUILD_ARGS=(--max-chars-per-domain 300000)
    SEEDS=${SEEDS:-1}
    REPORT=${REPORT:-$WORK/results.md}
    # 60 iterations: at these batches DGA's derived schedule (the default's runs) first updates at 20.
    RUN_ARGS=(--model tiny --train-iters 60 --eval-interval 20 --global-batch-size 8 --micro-batch-size 2)
    SCALE_ARGS=("${RUN_ARGS[@]}")
    PREPARE_ARGS=(--max-chars-per-domain 300000 --embedder tfidf --max-docs 200)
    VOCAB=2048 SCALE_VOCAB=1024 CLUSTERS=8,16,32 LARGE_K=16,32 BASES=4
else
    WORK=${WORK:-runs}
    SEEDS=${SEEDS:-"1 2 3"}
    if [[ "$PHASES" == "$ALL_PHASES" ]]; then REPORT=${REPORT:-docs/results.md}; else REPORT=${REPORT:-$WORK/results.md}; fi
    RUN_ARGS=(--model small --train-iters 200 --eval-interval 25)
    SCALE_ARGS=(--model small --train-iters 600 --eval-interval 50)
    PREPARE_ARGS=(--embedder minilm --max-docs 1500)
    VOCAB=8192 SCALE_VOCAB=2048 CLUSTERS=16,64,256 LARGE_K=${LARGE_K:-64,256} BASES=16
fi
TWO_SEEDS=$(echo $SEEDS | cut -d' ' -f1-2)
# The phases before headroom were run with DGA's former fixed update interval: they keep it. The
# headroom phase runs pretrain's default, which keeps the probes within --dga-probe-budget.
FORMER_INTERVAL=(--dga-update-interval 10)
DEFAULT_RUN_ARGS=("${RUN_ARGS[@]}")  # for the default's runs beside them, on the derived schedule
RUN_ARGS+=("${FORMER_INTERVAL[@]}")
if [[ -z "${CORPUS_DIR:-}" ]]; then
    CORPUS_DIR=$WORK/corpus
    python tools/build_corpus.py --output-dir "$CORPUS_DIR" \
        --domains $GENERIC,novels_austen,docs_perl_pod,code_go,code_java,code_rust,quotes_pt "${BUILD_ARGS[@]}"
fi
PREPARE_ARGS+=(--corpus-dir "$CORPUS_DIR")

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

# run PREPARED EXPERIMENT REGIME LABEL_DIR SEED [run.py flags]
run() {
    local prepared=$1 experiment=$2 regime=$3 label=$4 seed=$5
    shift 5
    local out="$WORK/runs/$experiment/$regime/$label/seed$seed"
    if [[ $regime == few-specific && ( $label == uniform || $label == natural || $label == static-* ) ]]; then
        # These never read the specific set's training sequences: the run is the plenty one.
        python examples/austen/run.py --prepared "$prepared" --experiment "$experiment" --regime plenty \
            --seed "$seed" --out "$WORK/runs/$experiment/plenty/$label/seed$seed" "$@"
        mkdir -p "$(dirname "$out")"
        ln -sfn "$(realpath "$WORK/runs/$experiment/plenty/$label/seed$seed")" "$out"
        return
    fi
    python examples/austen/run.py --prepared "$prepared" --experiment "$experiment" --regime "$regime" \
        --seed "$seed" --out "$out" "$@"
}

# Austen with the 8,192-token vocabulary: source domains, and clusterings of the generic mix.
AUSTEN="$WORK/austen/prepared.json"
if has_phase first || has_phase variants || has_phase large-k; then
    python examples/austen/prepare.py --work-dir "$WORK/austen" --importance --vocab-size $VOCAB \
        --clusters $CLUSTERS --bases $BASES "${PREPARE_ARGS[@]}"
fi

if has_phase first; then
    first_k=${CLUSTERS%%,*}
    for regime in plenty token-limited few-specific; do
        for method in uniform natural importance dga dga-ema; do
            for seed in $TWO_SEEDS; do
                run "$AUSTEN" sources $regime $method $seed --method $method --variant raw "${RUN_ARGS[@]}"
            done
        done
    done
    for method in uniform importance dga-ema; do
        run "$AUSTEN" clusters plenty $method 1 --method $method --variant raw --domains clusters \
            --clusters-k $first_k "${RUN_ARGS[@]}"
    done
fi

if has_phase variants; then
    # Every variant where DGA was fragile (plenty) and where it won (few-specific); the main
    # ones in the token-limited regime.
    for regime in plenty few-specific token-limited; do
        variants="raw adam-rms cosine-rms raw-control adam-control cosine-control adam-control-m4"
        [[ $regime == token-limited ]] && variants="raw adam-control cosine-control"
        for seed in $SEEDS; do
            run "$AUSTEN" variants $regime uniform $seed --method uniform "${RUN_ARGS[@]}"
            for variant in $variants; do
                run "$AUSTEN" variants $regime dga-$variant $seed --method dga --variant $variant "${RUN_ARGS[@]}"
            done
            # The default on pretrain's derived schedule, beside the same update every 10 iterations.
            run "$AUSTEN" variants $regime dga-adam-control-default $seed --method dga --variant adam-control \
                "${DEFAULT_RUN_ARGS[@]}"
        done
    done
fi

if has_phase large-k; then
    for k in ${LARGE_K//,/ }; do
        experiment=clusters$k
        common=(--domains clusters --clusters-k $k "${RUN_ARGS[@]}")
        # Uniform and DGA over bases (the cheaper way to k = 256) on two seeds; on every seed at
        # the largest k, where the two are closest.
        k_seeds=$TWO_SEEDS
        [[ $k == "${LARGE_K##*,}" ]] && k_seeds=$SEEDS
        for seed in $k_seeds; do
            run "$AUSTEN" $experiment plenty uniform $seed --method uniform "${common[@]}"
            run "$AUSTEN" $experiment plenty dga-bases $seed --method dga --variant adam-control \
                --base-distributions "${common[@]}"
            # The default on pretrain's derived schedule (over 16 bases at these batches: probes of
            # one sequence's tokens per source, the first 16 of 128 tokens of 8 sequences, and a
            # whole one of the specific set, every 20 iterations, where whole ones would come every 90).
            run "$AUSTEN" $experiment plenty dga-bases-default $seed --method dga --variant adam-control \
                --base-distributions --domains clusters --clusters-k $k "${DEFAULT_RUN_ARGS[@]}"
        done
        run "$AUSTEN" $experiment plenty importance 1 --method importance "${common[@]}"
        # Over every cluster: k + 1 probes per update, so updates are rarer (T_r = 50).
        run "$AUSTEN" $experiment plenty dga 1 --method dga --variant adam-control --dga-update-interval 50 \
            "${common[@]}"
    done
fi

if has_phase scale; then
    python examples/austen/prepare.py --work-dir "$WORK/austen-v$SCALE_VOCAB" --importance \
        --vocab-size $SCALE_VOCAB "${PREPARE_ARGS[@]}"
    SCALE="$WORK/austen-v$SCALE_VOCAB/prepared.json"
    for regime in plenty few-specific; do
        for seed in $TWO_SEEDS; do
            for method in uniform natural importance; do
                run "$SCALE" scale $regime $method $seed --method $method "${SCALE_ARGS[@]}"
            done
            run "$SCALE" scale $regime dga $seed --method dga --variant adam-control "${SCALE_ARGS[@]}" \
                "${FORMER_INTERVAL[@]}"
            run "$SCALE" scale $regime dga-ema $seed --method dga-ema --variant adam-control "${SCALE_ARGS[@]}" \
                "${FORMER_INTERVAL[@]}"
            run "$SCALE" scale $regime dga-default $seed --method dga --variant adam-control "${SCALE_ARGS[@]}"
        done
    done
fi

if has_phase targets; then
    # target: generic domains (the closest first)
    declare -A TARGETS=(
        [docs_python]=code_python,docs_perl_pod,scripture_kjv,drama_shakespeare,quotes_pt,code_go
        [code_go]=code_java,code_rust,scripture_kjv,drama_shakespeare,wordnet_glosses,quotes_en
    )
    for target in docs_python code_go; do
        python examples/austen/prepare.py --work-dir "$WORK/target-$target" --target $target \
            --generic "${TARGETS[$target]}" --vocab-size $VOCAB "${PREPARE_ARGS[@]}"
        for seed in $TWO_SEEDS; do
            run "$WORK/target-$target/prepared.json" target-$target plenty uniform $seed --method uniform "${RUN_ARGS[@]}"
            run "$WORK/target-$target/prepared.json" target-$target plenty dga $seed --method dga \
                --variant adam-control "${RUN_ARGS[@]}"
            run "$WORK/target-$target/prepared.json" target-$target plenty dga-default $seed --method dga \
                --variant adam-control "${DEFAULT_RUN_ARGS[@]}"
        done
    done
fi

if has_phase headroom; then
    # target: generic domains; every target at the scale phase's size (2,048 tokens, 600 iterations)
    declare -A HEADROOM_GENERIC=(
        [novels_austen]=$GENERIC
        [docs_python]=code_python,docs_perl_pod,scripture_kjv,drama_shakespeare,quotes_pt,code_go
        [code_go]=code_java,code_rust,scripture_kjv,drama_shakespeare,wordnet_glosses,quotes_en
        [drama_shakespeare]=scripture_kjv,poetry_milton,quotes_en,wordnet_glosses,docs_python,code_python
    )
    HEADROOM_TARGETS=${HEADROOM_TARGETS:-"novels_austen docs_python code_go drama_shakespeare"}
    # DGA's update in each form compared here (run.py --variant); the first is the default.
    HEADROOM_VARIANTS=${HEADROOM_VARIANTS:-"adam-control"}
    FIRST_SEED=${SEEDS%% *}
    prepared_of() { echo "$WORK/headroom-$1-v$SCALE_VOCAB/prepared.json"; }
    # search TARGET [headroom.py flags]: the best fixed mixture on the first seed, then the
    # winner and uniform on the other seed, whose losses the choice has not seen.
    search() {
        local target=$1 experiment=headroom-$1 prepared
        shift
        prepared=$(prepared_of $target)
        python examples/austen/headroom.py --prepared "$prepared" --work-dir "$WORK" --experiment $experiment \
            --seed $FIRST_SEED --rungs "${HEADROOM_RUNGS:-150,300,600}" "$@" -- "${SCALE_ARGS[@]}"
        local winner
        winner=$(python examples/austen/headroom.py winner "$WORK/headroom/$experiment-seed$FIRST_SEED.json")
        for seed in $TWO_SEEDS; do
            [[ $seed == "$FIRST_SEED" ]] && continue
            run "$prepared" $experiment plenty uniform $seed --method uniform "${SCALE_ARGS[@]}"
            [[ $winner == uniform* ]] || run "$prepared" $experiment plenty "static-${winner%% *}" $seed \
                --method static --mixture "${winner#* }" "${SCALE_ARGS[@]}"
        done
        if [[ $target == novels_austen ]]; then  # the same runs: fixed mixtures never read the specific set
            for seed in $TWO_SEEDS; do
                run "$prepared" $experiment few-specific uniform $seed --method uniform "${SCALE_ARGS[@]}"
                [[ $winner == uniform* ]] || run "$prepared" $experiment few-specific "static-${winner%% *}" \
                    $seed --method static --mixture "${winner#* }" "${SCALE_ARGS[@]}"
            done
        fi
    }
    for target in $HEADROOM_TARGETS; do
        python examples/austen/prepare.py --work-dir "$(dirname "$(prepared_of $target)")" --target $target \
            --generic "${HEADROOM_GENERIC[$target]}" --vocab-size $SCALE_VOCAB "${PREPARE_ARGS[@]}"
        search $target
    done
    for target in $HEADROOM_TARGETS; do
        regimes=plenty
        [[ $target == novels_austen ]] && regimes="plenty few-specific"
        for seed in $TWO_SEEDS; do
            for regime in $regimes; do
                for variant in $HEADROOM_VARIANTS; do
                    label=dga
                    [[ $variant != adam-control ]] && label=dga-$variant
                    run "$(prepared_of $target)" headroom-$target $regime $label $seed --method dga \
                        --variant $variant "${SCALE_ARGS[@]}"
                done
            done
        done
        # The default's learned mixture as one more fixed candidate (the finished runs are reused).
        search $target --candidate "$(python examples/austen/headroom.py mixture \
            "$WORK/runs/headroom-$target/plenty/dga/seed$FIRST_SEED")"
    done
fi

# The hand-written findings of the first experiments and of those at scale, before the tables.
NOTES=()
if (( ! QUICK )); then
    cat examples/austen/notes.md examples/austen/notes-at-scale.md > "$WORK/notes.md"
    NOTES=(--notes "$WORK/notes.md")
fi
python examples/austen/report.py --work-dir "$WORK" --output "$REPORT" "${NOTES[@]}"
