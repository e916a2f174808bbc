#!/usr/bin/env bash
# logscan.sh — issue 15: mamori logscan against Debian's pflogsumm on the
# same generated Postfix log, with a bare mawk count per sender as the floor.
#
# Generates ~1 GB and ~4 GB Postfix logs with bench/loggen (loggen's normal
# busy day, hour after hour: about 8.7 million lines per GB, deterministic by
# seed) in the work dir, installs pflogsumm if missing, and measures wall
# time and peak RSS (/usr/bin/time -v) of, on the 1 GB file:
#   mamori logscan FILE           (text report, findings and all tables)
#   mamori logscan --json FILE
#   pflogsumm FILE                (its full default report)
#   mawk count per sender         (the floor: one pass, one field, no joins)
# and mamori logscan alone on the 4 GB file, to show peak memory does not
# grow with the file. Each file is read once (cat > /dev/null) before it is
# measured, so every tool reads it from the page cache. mamori's totals are
# checked against the counts loggen wrote.
#
# Needs root for apt-get only when pflogsumm is missing. The work dir (the
# logs: about 5 GB) is removed at the end, also after a failure unless
# BENCH_KEEP_WORK=1.
#
# Environment (all optional):
#   BENCH_SIZES="1g 4g"        log sizes; the first gets all four tools, the others mamori only
#   BENCH_SEED=1               loggen seed
#   BENCH_TOOLS="mamori mamori-json pflogsumm mawk"
#   BENCH_WORK_BASE=/var/tmp   parent of the work dir
#   BENCH_KEEP_WORK=0          1: keep the work dir
#   BENCH_OUT=<repo>/bench/out
#   BENCH_MAMORI_REF=          build mamori from this commit (e.g. HEAD) instead of the working tree
#   BENCH_MAMORI_BIN=          use this mamori binary
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
read -r -a SIZES <<<"${BENCH_SIZES:-1g 4g}"
SEED=${BENCH_SEED:-1}
TOOLS=${BENCH_TOOLS:-mamori mamori-json pflogsumm mawk}
SERVERS=mamori # for lib.sh
FS_MODE=dir
FS_SIZE=0
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
KEEP_WORK=${BENCH_KEEP_WORK:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
LOG_NAME=logscan

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

need_commands go python3 mawk
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install time)"
if ! command -v pflogsumm >/dev/null; then
	need_root "apt-get install pflogsumm"
	log "installing pflogsumm"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pflogsumm >/dev/null
fi

make_work mamori-logscan
M=$WORK/mamori
build_mamori "$M" "$M/src"
(cd "$REPO" && go build -o "$WORK/loggen" ./bench/loggen)

GEN_NOTE=
ROWS=() # "| size | tool | lines | wall | peak RSS |" rows of the table

# measure LABEL SIZE LINES OUTFILE CMD...: run CMD under /usr/bin/time -v
# with stdout to OUTFILE and add a table row.
measure() {
	local label=$1 size=$2 lines=$3 out=$4 wall rss
	shift 4
	log "$label on $size: $*"
	/usr/bin/time -v -o "$WORK/time.txt" "$@" >"$out"
	wall=$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.txt" |
		awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; printf "%.2f", s }')
	rss=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$WORK/time.txt")
	ROWS+=("| $size | $label | $lines | $wall s | $((rss / 1024)) MB |")
	log "$label on $size: $wall s, $((rss / 1024)) MB"
}

# check_totals JSON COUNTS: mamori's totals must be what loggen wrote.
check_totals() {
	python3 - "$1" "$2" <<'PY' || die "mamori totals differ from loggen's counts"
import json, sys
got = json.load(open(sys.argv[1]))["totals"]
want = json.load(open(sys.argv[2]))["Totals"]
bad = [k for k in want if got[k.lower()] != want[k]]
print("totals", got, "want", want, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

# The floor: count messages per sender from qmgr's from= lines.
# shellcheck disable=SC2016 # an awk program, not shell
MAWK_PROG='/qmgr.*from=</{split($2,a,">"); n[a[1]]++} END{for(k in n) print n[k], k}'

first=1
for size in "${SIZES[@]}"; do
	f=$WORK/maillog-$size
	log "generating $size"
	start=$(date +%s%N)
	"$WORK/loggen" -size "$size" -seed "$SEED" -o "$f" -counts "$f.counts.json"
	gen=$((($(date +%s%N) - start) / 1000000000))
	bytes=$(stat -c %s "$f")
	lines=$(wc -l <"$f")
	log "$size: $bytes bytes, $lines lines, generated in ${gen} s"
	GEN_NOTE="$GEN_NOTE $size in ${gen} s"
	cat "$f" >/dev/null # into the page cache for every tool alike
	label="$((bytes / 1000000)) MB"
	if [[ " $TOOLS " == *" mamori "* || $first -eq 0 ]]; then
		measure "mamori logscan" "$label" "$lines" "$WORK/report.txt" "$M/mamori" logscan --year 2026 "$f"
		cp "$WORK/report.txt" "$WORK/report-$size.txt"
	fi
	if [[ " $TOOLS " == *" mamori-json "* || $first -eq 0 ]]; then
		measure "mamori logscan --json" "$label" "$lines" "$WORK/report.json" "$M/mamori" logscan --json --year 2026 "$f"
		check_totals "$WORK/report.json" "$f.counts.json"
	fi
	if [[ $first -eq 1 && " $TOOLS " == *" pflogsumm "* ]]; then
		measure "pflogsumm" "$label" "$lines" "$WORK/pflogsumm.txt" pflogsumm "$f"
	fi
	if [[ $first -eq 1 && " $TOOLS " == *" mawk "* ]]; then
		measure "mawk count per sender (floor)" "$label" "$lines" "$WORK/mawk.txt" mawk -F'from=<' "$MAWK_PROG" "$f"
	fi
	rm -f "$f"
	first=0
done

OUT=$(report_path logscan)
{
	echo "# logscan vs pflogsumm (issue 15), $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	machine_rows
	mamori_row
	echo "| pflogsumm | $(dpkg-query -W -f '${Version}' pflogsumm 2>/dev/null || echo '?'), $(perl -e 'print $^V') |"
	echo "| mawk | $(mawk -W version 2>&1 | head -1) |"
	echo "| logs | bench/loggen -seed $SEED (${GEN_NOTE# }), page cache warm |"
	echo
	echo "| log | tool | lines | wall | peak RSS |"
	echo "| --- | --- | ---: | ---: | ---: |"
	printf '%s\n' "${ROWS[@]}"
	echo
	echo "mamori's report on the first log (head):"
	echo
	echo '```'
	head -12 "$WORK/report-${SIZES[0]}.txt"
	echo '```'
	if [[ -s $WORK/pflogsumm.txt ]]; then
		echo
		echo "pflogsumm's totals on the first log:"
		echo
		echo '```'
		sed -n '/^Grand Totals/,/^Per-Hour/p' "$WORK/pflogsumm.txt" | head -30
		echo '```'
	fi
} >"$OUT"
finish_report "$OUT"
