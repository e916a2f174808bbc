#!/usr/bin/env bash
# cluster.sh — what clustered mode costs: SMTP accept throughput and the
# guard's decision time with the rate windows counted in Redis, against the
# embedded store, in the same run (issue 17).
#
# One mamori node on loopback, started fresh for each round, alternating
# embedded and redis (BENCH_ROUNDS rounds each). The load comes from a
# trusted office client (127.0.0.1 in [relay] trusted_networks, its limits
# raised by a [guard.overrides] entry so that it is never isolated), so every
# message is a local sender's: with [store] backend = "redis" each one makes
# the guard's round trip to Redis (one Lua script over the IP's and the
# envelope sender's windows). Postfix's smtp-source sends 1 KiB messages, one
# per connection, at BENCH_SESSIONS sessions; accepted/s = N / its wall time
# (it fails unless every message got a 2xx). Redis runs with appendonly yes,
# appendfsync everysec (RDB off) on a free loopback port.
#
# Then the guard's end-of-DATA decision alone, embedded vs Redis, with
# `go test -bench MessageDecision ./internal/guard/share`.
#
# Needs root (apt-get download postfix for smtp-source) and redis-server.
# Environment: BENCH_N=3000 BENCH_SESSIONS=10 BENCH_ROUNDS=3 BENCH_SIZE=1024
# BENCH_WORK_BASE=/var/tmp BENCH_OUT=<repo>/bench/out BENCH_KEEP_WORK=0
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${BENCH_N:-3000}
SESSIONS=${BENCH_SESSIONS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
SIZE=${BENCH_SIZE:-1024}
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
KEEP_WORK=${BENCH_KEEP_WORK:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
FS_MODE=dir
SERVERS="mamori"
FROM=pc@bench.test
RCPT=sink@bench.test

LOG_NAME=cluster
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

need_root "apt-get download postfix (smtp-source)"
need_commands go python3 apt-get dpkg dpkg-deb redis-server redis-cli git
make_work mamori-cluster

fetch_postfix_pkg
M=$WORK/mamori
build_mamori "$M" "$M/src"

# Redis, as it ships, on a free port; stopped by the EXIT trap.
read -r P_REDIS <<<"$(free_ports 1)"
mkdir -p "$WORK/redis"
redis-server --bind 127.0.0.1 --port "$P_REDIS" --dir "$WORK/redis" --save "" \
	--appendonly yes --appendfsync everysec --daemonize no --logfile "$WORK/redis/redis.log" &
BG_PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$P_REDIS" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$P_REDIS" ping >/dev/null || die "redis-server did not start"
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')

# one_round MODE ROUND: a fresh node, N messages, prints accepted/s.
one_round() {
	local mode=$1 round=$2 d ports t0 t1
	d=$M/$mode-$round
	mkdir -p "$d"
	read -r P_SMTP P_SUB P_SUBS P_ADMIN <<<"$(free_ports 4)"
	"$M/mamori" init --dir "$d/inst" --domain bench.test --listen-host 127.0.0.1 \
		--smtp-port "$P_SMTP" --submission-port "$P_SUB" --submissions-port "$P_SUBS" \
		--admin-port "$P_ADMIN" >"$d/init.log"
	MCONF=$d/inst/mamori.toml
	sed -i -E 's/^(imap|imaps|pop3|pop3s) = .*/\1 = ""/' "$MCONF"
	sed -i '/^\[log\]/,/^\[/ s/^level = .*/level = "warn"/' "$MCONF"
	sed -i 's/^verify_inbound = true/verify_inbound = false/' "$MCONF"
	sed -i 's|^trusted_networks = \[\]|trusted_networks = ["127.0.0.1/32"]|' "$MCONF"
	raise_guard_limits "$MCONF"
	local big='{ msgs_per_minute = 100000000, rcpts_per_minute = 100000000, rcpts_per_hour = 100000000, rcpts_per_day = 100000000, new_rcpts_per_minute = 100000000 }'
	awk -v add="\"127.0.0.1\" = $big
\"$FROM\" = $big" '{ print } $0 == "[guard.overrides]" { print add }' "$MCONF" >"$MCONF.tmp" && mv "$MCONF.tmp" "$MCONF"
	grep -q '^"127.0.0.1" = ' "$MCONF" || die "no [guard.overrides] section in $MCONF"
	if [[ $mode == redis ]]; then
		redis-cli -p "$P_REDIS" flushall >/dev/null
		sed -i "s|^# backend = .*|backend = \"redis\"|; s|^backend = .*|backend = \"redis\"|" "$MCONF"
		sed -i "s|^# url = .*|url = \"redis://127.0.0.1:$P_REDIS/0\"|; s|^url = .*|url = \"redis://127.0.0.1:$P_REDIS/0\"|" "$MCONF"
		grep -q '^backend = "redis"' "$MCONF" || die "could not set [store] backend in $MCONF"
	fi
	head -c 24 /dev/urandom | base64 | "$M/mamori" user add "$RCPT" --password-stdin --config "$MCONF" >"$d/user.log"
	start_mamori "$M" "$P_SMTP" # logs to $M/mamori.log
	LD_LIBRARY_PATH=$WORK/pkg/x/usr/lib/postfix "$SMTP_SOURCE" -s "$SESSIONS" -m 200 -l "$SIZE" \
		-f "$FROM" -t "$RCPT" "127.0.0.1:$P_SMTP" >/dev/null # warm-up
	t0=$(date +%s.%N)
	LD_LIBRARY_PATH=$WORK/pkg/x/usr/lib/postfix timeout 600 "$SMTP_SOURCE" -s "$SESSIONS" -m "$N" -l "$SIZE" \
		-f "$FROM" -t "$RCPT" "127.0.0.1:$P_SMTP" >"$d/source.log" 2>&1 || die "smtp-source failed ($mode round $round), see $d/source.log"
	t1=$(date +%s.%N)
	cp "$M/mamori.log" "$d/mamori.log"
	if [[ $mode == redis ]]; then
		grep -q "shared counters unavailable" "$d/mamori.log" && die "Redis did not answer during the run ($d/mamori.log)"
		[[ $(redis-cli -p "$P_REDIS" --scan --pattern '{mamori}:c:*' | wc -l) -ge 1 ]] || die "no shared counters in Redis: the redis round was not clustered"
	fi
	stop_mamori
	MAMORI_PID=
	python3 -c "print(f'{$N / ($t1 - $t0):.1f}')"
}

declare -A RES
for round in $(seq 1 "$ROUNDS"); do
	for mode in embedded redis; do
		RES[$mode-$round]=$(one_round "$mode" "$round")
		log "round $round $mode: ${RES[$mode-$round]} accepted/s"
	done
done

log "guard decision micro-benchmark"
BENCHOUT=$(cd "$REPO" && go test -run '^$' -bench MessageDecision -benchtime 2s -count 3 ./internal/guard/share 2>&1 | grep '^BenchmarkMessageDecision')

OUT=$(report_path cluster)
{
	echo "# Clustered mode: Redis vs embedded, $(date -u +%Y-%m-%d)"
	echo
	echo "Command: \`sudo bench/cluster.sh\` (BENCH_N=$N BENCH_SESSIONS=$SESSIONS BENCH_ROUNDS=$ROUNDS BENCH_SIZE=$SIZE)"
	echo
	machine_rows
	mamori_row
	echo "| redis-server | $REDIS_VERSION (appendonly yes, appendfsync everysec, RDB off) |"
	echo "| smtp-source | Postfix $PF_DEB_VERSION |"
	echo
	echo "SMTP accepted messages per second, $SESSIONS sessions, $N × $SIZE-byte messages from a trusted client:"
	echo
	echo "| round | embedded | redis | redis / embedded |"
	echo "| --- | ---: | ---: | ---: |"
	for round in $(seq 1 "$ROUNDS"); do
		e=${RES[embedded-$round]} r=${RES[redis-$round]}
		echo "| $round | $e | $r | $(python3 -c "print(f'{$r / $e:.2f}')") |"
	done
	python3 - "${RES[@]}" <<PY
import statistics, sys
e = [float(x) for x in """$(for r in $(seq 1 "$ROUNDS"); do echo "${RES[embedded-$r]}"; done)""".split()]
r = [float(x) for x in """$(for r in $(seq 1 "$ROUNDS"); do echo "${RES[redis-$r]}"; done)""".split()]
me, mr = statistics.median(e), statistics.median(r)
print(f"| median | {me:.1f} | {mr:.1f} | {mr / me:.2f} |")
PY
	echo
	echo "Guard end-of-DATA decision (\`go test -bench MessageDecision ./internal/guard/share\`):"
	echo
	echo '```'
	echo "$BENCHOUT"
	echo '```'
} >"$OUT"
finish_report "$OUT"
