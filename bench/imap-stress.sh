#!/usr/bin/env bash
# imap-stress.sh — IMAP under load, mamori vs a private stock Dovecot (issue 13).
#
# Both servers run side by side on loopback on this machine, each with one
# user, bench@bench.test, over implicit TLS (IMAPS). For each server, in the
# same run and with the same parameters, the script measures:
#   - throughput and correctness: Dovecot's imaptest in stress mode (the
#     shared tools' imap-stress wrapper: BENCH_CLIENTS clients for BENCH_SECS
#     seconds running imaptest's default random mix of LOGIN, LIST, STATUS,
#     SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT in one shared mailbox,
#     checking each other's view of it): commands per second, in total and
#     by command type with mean latency, and imaptest's error count;
#   - memory per idle connection: the resident memory of the server's process
#     tree (mamori: its one process; Dovecot: the master and every child —
#     imap-login, imap, auth, anvil, log, config, stats) before and after
#     BENCH_IDLE idle, logged-in IMAPS connections are opened (bench/imapidle),
#     as RSS and PSS, divided by the number of connections held.
#
# Needs root: apt-get (dovecot-imapd; imaptest's build dependencies), loop
# mounts, and a Dovecot instance that switches to the unprivileged nobody
# user for mail. Dovecot's config, state, logs and Maildir live in the work
# dir; no system service is started. Every process the script starts is
# stopped on exit, also on failure or Ctrl-C.
#
# Environment (all optional):
#   BENCH_SECS=30                     seconds of each measured imaptest run
#   BENCH_CLIENTS=10                  concurrent imaptest clients
#   BENCH_WARMUP=5                    seconds of an unreported imaptest run per
#                                     server first (0: none)
#   BENCH_IDLE=500                    idle logged-in connections for the memory
#                                     figure (0: skip that part)
#   BENCH_SERVERS="mamori dovecot"    which servers to measure
#   BENCH_DOVECOT_LIMITS=raise        raise: lift Dovecot's default per-user+IP
#                                     connection limit (10) and process limits
#                                     (100) so it can hold BENCH_IDLE connections
#                                     (limits only, no tuning); stock: leave them
#   BENCH_DOVECOT_HASH=mamori         mamori: the user's password hashed with
#                                     Argon2id at mamori's parameters (m=19 MiB,
#                                     t=2), so a LOGIN costs both the same;
#                                     doveadm: `doveadm pw -s ARGON2ID` (Dovecot's
#                                     defaults, m=64 MiB, t=3)
#   BENCH_IMAPTEST=/tmp/imaptest      where imaptest is (built there if missing,
#                                     with BENCH_IMAPTEST_BUILD, default
#                                     <repo>/../shared/tools/imaptest/build.sh)
#   BENCH_FS=loop, BENCH_FS_SIZE=2G   as in smtp-accept.sh: each server's data on
#                                     its own fresh ext4, or dir: the work dir's
#   BENCH_WORK_BASE=/var/tmp          where the work dir is made
#   BENCH_KEEP_WORK=0                 1: keep the work dir (logs, Maildirs)
#   BENCH_OUT=<repo>/bench/out        where the Markdown result goes
#   BENCH_MAMORI_REF= (or BENCH_REF=) build mamori from this git commit
#   BENCH_MAMORI_BIN=                 use this mamori binary instead
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${BENCH_SECS:-30}
CLIENTS=${BENCH_CLIENTS:-10}
WARMUP=${BENCH_WARMUP:-5}
IDLE_N=${BENCH_IDLE:-500}
SERVERS=${BENCH_SERVERS:-mamori dovecot}
DC_LIMITS=${BENCH_DOVECOT_LIMITS:-raise}
DC_HASH=${BENCH_DOVECOT_HASH:-mamori}
IMAPTEST_DIR=${BENCH_IMAPTEST:-/tmp/imaptest}
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
FS_MODE=${BENCH_FS:-loop}
FS_SIZE=${BENCH_FS_SIZE:-2G}
KEEP_WORK=${BENCH_KEEP_WORK:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
BENCH_MAMORI_REF=${BENCH_MAMORI_REF:-${BENCH_REF:-}}
USER_ADDR=bench@bench.test
STRESS_TIMEOUT=$((SECS + 180)) # imap-stress itself stops imaptest at SECS + 120
IDLE_TIMEOUT=600               # max seconds to open all idle connections

LOG_NAME=imap-stress
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

for v in SECS CLIENTS WARMUP IDLE_N; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_${v%_N} must be a number, not ${!v}"
done
[[ $SECS -ge 1 && $CLIENTS -ge 1 ]] || die "BENCH_SECS and BENCH_CLIENTS must be at least 1"
[[ $DC_LIMITS == raise || $DC_LIMITS == stock ]] || die "BENCH_DOVECOT_LIMITS must be raise or stock"
[[ $DC_HASH == mamori || $DC_HASH == doveadm ]] || die "BENCH_DOVECOT_HASH must be mamori or doveadm"
for s in $SERVERS; do
	[[ $s == mamori || $s == dovecot ]] || die "BENCH_SERVERS: unknown server $s"
done

need_root "apt-get, loop mounts and a private Dovecot instance need it"
need_commands go python3 apt-get dpkg git openssl timeout
make_work mamori-imap

# --- tools: imaptest, bench/imapidle, Dovecot --------------------------------
build_imaptest "$IMAPTEST_DIR"
build_imapidle "$WORK/bin"
DC_VERSION=
if has_server dovecot; then
	install_dovecot
fi

# shellcheck disable=SC2119 # default mkfs options
server_filesystems
PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$PASSWORD" >"$WORK/password"
chmod 600 "$WORK/password"

ports=$(free_ports 6)
read -r P_SMTP P_SUB P_SUBS P_ADMIN P_IMAPS P_DC <<<"$ports"

# --- mamori ------------------------------------------------------------------
MAMORI_BUILT=
if has_server mamori; then
	M=$WORK/mamori
	build_mamori "$M" "$M/src"
	init_mamori "$M" "$P_SMTP" "$P_SUB" "$P_SUBS" "$P_ADMIN"
	sed -i -E "s/^imaps = .*/imaps = \"127.0.0.1:$P_IMAPS\"/" "$MCONF"
	grep -q "^imaps = \"127.0.0.1:$P_IMAPS\"" "$MCONF" || die "could not set [listen] imaps in $MCONF"
	# All clients connect from 127.0.0.1: lift the guard's per-IP limits, as
	# Dovecot's per-user+IP limit is lifted below.
	raise_guard_limits "$MCONF"
	printf '%s\n' "$PASSWORD" | "$M/mamori" user add "$USER_ADDR" --password-stdin --config "$MCONF" >"$M/user.log"
	start_mamori "$M" "$P_SMTP"
	wait_imaps "$P_IMAPS" 30 || die "mamori did not answer IMAPS on 127.0.0.1:$P_IMAPS, see $M/mamori.log"
	log "mamori IMAPS on 127.0.0.1:$P_IMAPS"
fi

# --- Dovecot -----------------------------------------------------------------
DC_CHANGED="none"
if has_server dovecot; then
	D=$WORK/dovecot
	dovecot_conf "$D" "$USER_ADDR" "$PASSWORD"
	{
		echo "service imap-login {"
		echo "  inet_listener imap {"
		echo "    port = 0"
		echo "  }"
		echo "  inet_listener imaps {"
		echo "    port = $P_DC"
		echo "  }"
		if [[ $DC_LIMITS == raise ]]; then
			# In Dovecot's default (high-security) login mode every TLS
			# connection keeps its own imap-login process (it proxies TLS
			# for the imap process), and every logged-in one has an imap
			# process; both are capped at default_process_limit = 100, and a
			# user may have 10 connections per IP. Raise exactly those.
			echo "  process_limit = $((IDLE_N + CLIENTS + 100))"
		fi
		echo "}"
		if [[ $DC_LIMITS == raise ]]; then
			echo "service imap {"
			echo "  process_limit = $((IDLE_N + CLIENTS + 100))"
			echo "}"
			echo "mail_max_userip_connections = $((IDLE_N + CLIENTS + 100))"
		fi
	} >>"$D/dovecot.conf"
	if [[ $DC_LIMITS == raise ]]; then
		DC_CHANGED="\`service imap-login { process_limit = $((IDLE_N + CLIENTS + 100)) }\`, \`service imap { process_limit = $((IDLE_N + CLIENTS + 100)) }\`, \`mail_max_userip_connections = $((IDLE_N + CLIENTS + 100))\` (defaults 100, 100, 10)"
	fi
	start_dovecot "$D/dovecot.conf" "$P_DC"
fi

port_of() { case $1 in mamori) echo "$P_IMAPS" ;; dovecot) echo "$P_DC" ;; esac; }
pid_of() { case $1 in mamori) echo "$MAMORI_PID" ;; dovecot) dovecot_pid ;; esac; }

tree_cpu() { # pid: CPU seconds of pid and its descendants, live or reaped
	# shellcheck disable=SC2046 # one pid per word
	python3 - $(tree_pids "$1") <<'EOF'
import os, sys
t = 0
for pid in sys.argv[1:]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            t += sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15])
    except OSError:
        pass
print(f"{t / os.sysconf('SC_CLK_TCK'):.2f}")
EOF
}

# stress SERVER SECS LOG: one imap-stress run; prints its result line. The
# exit status is imap-stress's (0 clean, 1 imaptest errors, 2 could not run).
stress() {
	local rc=0
	timeout -k 10 "$STRESS_TIMEOUT" "$IMAPTEST_DIR/imap-stress" 127.0.0.1 "$(port_of "$1")" "$USER_ADDR" "$PASSWORD" "$2" \
		--clients "$CLIENTS" --tls --log "$3" || rc=$?
	return "$rc"
}

# --- 1. imaptest stress ------------------------------------------------------
declare -A LINE RC CPU
for server in $SERVERS; do
	if [[ $WARMUP -gt 0 ]]; then
		log "$server: warm-up, imaptest $WARMUP s, $CLIENTS clients"
		stress "$server" "$WARMUP" "$WORK/$server-warmup.log" >/dev/null || true
	fi
	log "$server: imaptest $SECS s, $CLIENTS clients"
	pid=$(pid_of "$server")
	c0=$(tree_cpu "$pid")
	rc=0
	LINE[$server]=$(stress "$server" "$SECS" "$WORK/$server-stress.log") || rc=$?
	c1=$(tree_cpu "$pid")
	RC[$server]=$rc
	CPU[$server]=$(python3 -c "print(f'{$c1 - $c0:.1f}')")
	log "${LINE[$server]} (exit $rc; server CPU ${CPU[$server]} s)"
	[[ $rc -le 1 ]] || log "warning: imap-stress could not run against $server"
done

# --- 2. memory per idle connection -------------------------------------------
declare -A MEM0 MEM1 OPENED
# idle SERVER: memory of the server's tree before and with IDLE_N idle,
# logged-in connections; sets MEM0, MEM1 ("RSS PSS NPROCS BREAKDOWN") and
# OPENED (imapidle's line).
idle() {
	local server=$1 pid line
	pid=$(pid_of "$server")
	sleep 2
	MEM0[$server]=$(tree_mem "$pid")
	coproc IDLE { exec "$IMAPIDLE" -addr "127.0.0.1:$(port_of "$server")" -user "$USER_ADDR" \
		-password-file "$WORK/password" -n "$IDLE_N" -deadline "${IDLE_TIMEOUT}s" -hold "$((IDLE_TIMEOUT + 120))s"; }
	BG_PIDS+=("$IDLE_PID")
	local ipid=$IDLE_PID
	read -r -t "$((IDLE_TIMEOUT + 60))" line <&"${IDLE[0]}" || line="imapidle: no report"
	OPENED[$server]=$line
	log "$server: $line"
	sleep 3 # let the server settle (login processes exit, buffers shrink)
	MEM1[$server]=$(tree_mem "$pid")
	echo release >&"${IDLE[1]}"
	wait "$ipid" || log "warning: imapidle exited with status $?"
	log "$server: before ${MEM0[$server]}"
	log "$server: with   ${MEM1[$server]}"
}
if [[ $IDLE_N -gt 0 ]]; then
	for server in $SERVERS; do
		log "$server: $IDLE_N idle logged-in IMAPS connections"
		idle "$server"
	done
fi

# --- 3. report ---------------------------------------------------------------
# parse_line LINE: imap-stress's result line as "TYPE RATE LATENCY" lines,
# first "total RATE -" and last "errors N -".
parse_line() {
	python3 - "$1" <<'EOF'
import re, sys
line = sys.argv[1]
m = re.search(r"clients: ([0-9.]+) cmd/s; (.*); errors (\d+)", line)
if not m:
    print("total - -")
    print("errors - -")
    sys.exit()
print("total", m.group(1), "-")
for part in m.group(2).split(", "):
    f = part.split()
    if len(f) == 3:
        print(f[0], f[1].removesuffix("/s"), f[2])
print("errors", m.group(3), "-")
EOF
}

declare -A RATE LAT
TYPES=()
for server in $SERVERS; do
	while read -r t r l; do
		RATE[$server,$t]=$r
		LAT[$server,$t]=$l
		[[ $t == total || $t == errors || " ${TYPES[*]} " == *" $t "* ]] || TYPES+=("$t")
	done < <(parse_line "${LINE[$server]}")
done

kib_per_conn() { # server field(1=RSS,2=PSS): KiB per held connection
	python3 - "${MEM0[$1]}" "${MEM1[$1]}" "${OPENED[$1]}" "$2" <<'EOF'
import sys
a, b, o, i = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4]) - 1
n = int(o[1]) if len(o) > 1 and o[0] == "open" else 0
print(f"{(int(b[i]) - int(a[i])) / n:.0f}" if n else "-")
EOF
}
mib() { python3 -c "print(f'{$1/1024:.1f}')"; }

dc_hash_desc() { # the scheme and parameters of the Dovecot user's password hash
	local h
	h=$(cut -d: -f2 "$D/users")
	case $h in
	'{ARGON2ID}'*)
		h=${h#*\$argon2id\$}
		h=${h#*\$}
		echo "ARGON2ID ${h%%\$*}"
		;;
	*) echo "${h%%\}*}}" ;;
	esac
}

log_digest() { # log file: its warnings and errors, counted by message, at most 15
	[[ -f $1 ]] || { echo "(no log)"; return 0; }
	grep -aiE 'warn|error|fatal|panic' "$1" |
		sed -E 's/^time=[^ ]+ //; s/^[A-Z][a-z]{2} [0-9]{2} [0-9:.]+ //; s/[0-9]+/#/g' |
		cut -c1-220 | sort | uniq -c | sort -rn | head -15 || true
	grep -qaiE 'warn|error|fatal|panic' "$1" || echo "(none)"
}

fsdesc() { # dir -> "fstype (options)"
	findmnt -no FSTYPE,OPTIONS -T "$1" | awk '{print $1 " (" $2 ")"}'
}

OUT=$(report_path imap-stress)
{
	echo "# IMAP: imaptest stress vs Dovecot ($(date -u +'%Y-%m-%d %H:%M UTC'))"
	echo
	cmd="BENCH_SECS=$SECS BENCH_CLIENTS=$CLIENTS BENCH_IDLE=$IDLE_N"
	[[ $SERVERS != "mamori dovecot" ]] && cmd+=" BENCH_SERVERS=\"$SERVERS\""
	[[ $FS_MODE != loop ]] && cmd+=" BENCH_FS=$FS_MODE"
	[[ $DC_LIMITS != raise ]] && cmd+=" BENCH_DOVECOT_LIMITS=$DC_LIMITS"
	[[ $DC_HASH != mamori ]] && cmd+=" BENCH_DOVECOT_HASH=$DC_HASH"
	[[ -n $BENCH_MAMORI_REF ]] && cmd+=" BENCH_MAMORI_REF=$BENCH_MAMORI_REF"
	echo "Command: \`$cmd bash bench/imap-stress.sh\`"
	echo
	echo "Load: \`imap-stress 127.0.0.1 PORT $USER_ADDR PASSWORD $SECS --clients $CLIENTS --tls\`"
	echo "(imaptest's default random command mix in the mailbox \`imaptest-stress\`, implicit TLS),"
	echo "after a ${WARMUP} s warm-up run per server; then $IDLE_N idle logged-in IMAPS connections"
	echo "(\`bench/imapidle\`) per server."
	echo
	machine_rows
	echo "| server filesystems | $( [[ $FS_MODE == loop ]] && echo "each server on its own fresh $FS_SIZE loop-mounted " )$(fsdesc "$WORK/${SERVERS%% *}") |"
	echo "| imaptest | $("$IMAPTEST_DIR/bin/imaptest" --version 2>/dev/null | head -1 || true)$(cat "$IMAPTEST_DIR/version" 2>/dev/null || echo "commit 924f619 + shared tools patch") |"
	if has_server dovecot; then
		echo "| Dovecot | $DC_VERSION; built-in defaults, ssl = required, ECDSA P-256 self-signed, Maildir, passwd-file, password hash $(dc_hash_desc) |"
		echo "| Dovecot settings changed from defaults | $DC_CHANGED |"
	fi
	mamori_row
	echo
	echo "### Throughput (commands/s; mean latency)"
	echo
	printf '| command |'
	for s in $SERVERS; do printf ' %s |' "$s"; done
	echo
	printf '| --- |'
	for _ in $SERVERS; do printf ' ---: |'; done
	echo
	for t in total "${TYPES[@]}"; do
		printf '| %s |' "$t"
		for s in $SERVERS; do
			r=${RATE[$s,$t]:--} l=${LAT[$s,$t]:--}
			if [[ $t == total ]]; then printf ' **%s** |' "$r"; else printf ' %s; %s |' "$r" "$l"; fi
		done
		echo
	done
	printf '| imaptest errors |'
	for s in $SERVERS; do printf ' %s |' "${RATE[$s,errors]:--}"; done
	echo
	printf '| server CPU s (per 1000 commands) |'
	for s in $SERVERS; do
		tot=${RATE[$s,total]:--}
		if [[ $tot != - ]]; then
			printf ' %s (%s) |' "${CPU[$s]}" "$(python3 -c "print(f'{${CPU[$s]} * 1000 / ($tot * $SECS):.2f}')")"
		else
			printf ' %s |' "${CPU[$s]:--}"
		fi
	done
	echo
	echo
	for s in $SERVERS; do
		echo "- $s: \`${LINE[$s]}\` (exit ${RC[$s]})"
	done
	for s in $SERVERS; do
		if [[ ${RC[$s]} -ne 0 ]]; then
			echo
			echo "imaptest errors against $s, $(grep -cE '^(Error|Panic|Fatal):' "$WORK/$s-stress.log" || true) in all, by kind (client numbers,"
			echo "tags and sequence numbers replaced by #; imaptest's whole output: \`$(basename "${OUT%.md}")-$s-imaptest.log\`):"
			echo
			echo '```'
			grep -E '^(Error|Panic|Fatal):' "$WORK/$s-stress.log" | cut -c1-300 |
				sed -E 's/\[[0-9]+\]/[#]/; s/ [0-9]+\.[0-9]+ (OK|NO|BAD)/ #.# \1/; s/\* [0-9]+ /* # /g' |
				sort | uniq -c | sort -rn | head -20 || true
			echo '```'
		fi
	done
	if [[ $IDLE_N -gt 0 ]]; then
		echo
		echo "### Memory per idle connection ($IDLE_N logged-in IMAPS connections)"
		echo
		echo "Resident memory of the server's whole process tree before and with the connections"
		echo "open. RSS counts shared pages once per process; PSS divides them among the"
		echo "processes sharing them (for one process the two are about equal)."
		echo
		echo "| server | held | processes before → with | RSS before → with (MiB) | RSS KiB/conn | PSS before → with (MiB) | PSS KiB/conn |"
		echo "| --- | ---: | --- | --- | ---: | --- | ---: |"
		for s in $SERVERS; do
			read -r r0 p0 n0 _ <<<"${MEM0[$s]}"
			read -r r1 p1 n1 _ <<<"${MEM1[$s]}"
			held=$(awk '$1 == "open" { print $2 }' <<<"${OPENED[$s]}")
			echo "| $s | ${held:-0} of $IDLE_N | $n0 → $n1 | $(mib "$r0") → $(mib "$r1") | **$(kib_per_conn "$s" 1)** | $(mib "$p0") → $(mib "$p1") | $(kib_per_conn "$s" 2) |"
		done
		echo
		for s in $SERVERS; do
			echo "- $s: \`${OPENED[$s]}\`; by process name (RSS KiB/count) with the connections: ${MEM1[$s]#* * * }"
		done
	fi
	echo
	echo "### Server log warnings and errors during the run"
	echo
	for s in $SERVERS; do
		case $s in
		mamori) f=$WORK/mamori/mamori.log ;;
		dovecot) f=$WORK/dovecot/dovecot.log ;;
		esac
		echo "$s (count, message; timestamps and numbers replaced by #):"
		echo
		echo '```'
		log_digest "$f"
		echo '```'
	done
} >"$OUT"
for s in $SERVERS; do
	cp "$WORK/$s-stress.log" "${OUT%.md}-$s-imaptest.log" 2>/dev/null || true
done
finish_report "$OUT"
