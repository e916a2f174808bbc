#!/usr/bin/env bash
# queue-surgery.sh — issue 4: bulk operations on a 100,000-message queue,
# mamori vs the usual Postfix recipes.
#
# Both servers get the same queue: 90,000 messages from 1,000 different
# senders plus 10,000 from abuser@bad.test, all to recipients at dest.test,
# whose next hop is a closed loopback port, so every message stays queued
# (deferred after one refused connection). Then, against the running server:
#   mamori:  queue list --from abuser@bad.test --count / --json,
#            queue hold / release / delete --from abuser@bad.test
#            (the CLI goes through the admin API);
#   Postfix: postqueue -j | jq | postsuper -h - / -H - / -d -,
#            the documented mailq | awk | postsuper -d - recipe,
#            and postsuper -d ALL on the whole queue (last).
# Each operation is timed (wall clock, including the pipeline) and its effect
# is verified (counts) after every step. The abuser's 10,000 are refilled
# after every delete. The queue is left to settle (nothing due for delivery)
# before every timed step.
#
# Needs root (mount, a private Postfix instance). Uses the installed postfix
# package's binaries (installs it, debconf "No configuration", if missing),
# jq (installed with apt-get if missing), and a small Go SMTP filler,
# bench/qfill, because smtp-source has one sender per run. Everything
# listens on 127.0.0.1 only, on free ports; every process the script starts
# is stopped on exit, also on failure or Ctrl-C.
#
# Environment (all optional):
#   BENCH_N=100000             messages in the queue
#   BENCH_ABUSE=10000          of which from abuser@bad.test
#   BENCH_SENDERS=1000         distinct other senders
#   BENCH_RUNS=3               measurement rounds per server
#   BENCH_SERVERS="mamori postfix"
#   BENCH_SESSIONS=50          concurrent SMTP sessions while filling
#   BENCH_FS=loop              loop: each server on its own fresh ext4 image; dir: work dir
#   BENCH_FS_SIZE=6G           size of each loop image
#   BENCH_WORK_BASE=/var/tmp   parent of the work dir
#   BENCH_KEEP_WORK=0          1: keep the work dir
#   BENCH_OUT=<repo>/bench/out
#   BENCH_MAMORI_REF=          build mamori from this commit (e.g. HEAD) instead of the working tree
#   BENCH_MAMORI_BIN=          use this mamori binary
#   BENCH_SETTLE_TIMEOUT=600   max seconds to wait for a queue to settle
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${BENCH_N:-100000}
ABUSE=${BENCH_ABUSE:-10000}
SENDERS=${BENCH_SENDERS:-1000}
RUNS=${BENCH_RUNS:-3}
SERVERS=${BENCH_SERVERS:-mamori postfix}
SESSIONS=${BENCH_SESSIONS:-50}
FS_MODE=${BENCH_FS:-loop}
FS_SIZE=${BENCH_FS_SIZE:-6G}
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
KEEP_WORK=${BENCH_KEEP_WORK:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
SETTLE_TIMEOUT=${BENCH_SETTLE_TIMEOUT:-600}
ABUSER=abuser@bad.test
OTHERS=$((N - ABUSE))

LOG_NAME=queue-surgery
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

need_root "mount and a private Postfix instance need it"
((ABUSE > 0 && OTHERS > 0)) || die "need 0 < BENCH_ABUSE < BENCH_N"
need_commands go python3 git findmnt apt-get
make_work mamori-qbench

# --- tools -------------------------------------------------------------------
if ! command -v jq >/dev/null; then
	log "installing jq"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >"$WORK/apt-jq.log" 2>&1 || die "apt-get install jq failed"
fi
if has_server postfix && ! command -v postsuper >/dev/null; then
	# shellcheck disable=SC2119 # any version
	install_postfix
fi
log "building bench/qfill"
(cd "$REPO" && go build -o "$WORK/qfill" ./bench/qfill)

# --- a filesystem per server -------------------------------------------------
# Postfix keeps one file per message plus one defer log per deferred message:
# 100,000 messages need 200,000+ inodes, more than mkfs's default gives.
server_filesystems -N $((N * 4))

# --- free loopback ports (the last one is left closed: the dead next hop) ----
ports=$(free_ports 6)
read -r P_SMTP P_SUB P_SUBS P_ADMIN P_PF P_DEAD <<<"$ports"

# The machine is shared: wait until no go test runs before each measurement.
wait_idle() {
	local i=0
	while pgrep -f "go test" >/dev/null; do
		((i++ % 12 == 0)) && log "waiting for a running go test to finish"
		sleep 5
	done
	return 0
}

# timed NAME CMD: run CMD with bash -c, stdout to $WORK/out.NAME, print wall seconds.
timed() {
	local name=$1 cmd=$2 t0 t1
	wait_idle
	sync
	sleep 1
	t0=$(date +%s%N)
	bash -o pipefail -c "$cmd" >"$WORK/out.$name" 2>"$WORK/err.$name" || {
		cat "$WORK/err.$name" >&2
		die "$name failed: $cmd"
	}
	t1=$(date +%s%N)
	printf '%d.%03d\n' $(((t1 - t0) / 1000000000)) $((((t1 - t0) / 1000000) % 1000))
}

expect() { # what got want
	[[ $2 == "$3" ]] || die "$1: got $2, want $3"
	log "ok: $1 = $2"
}

fill() { # port n from senders
	"$WORK/qfill" -addr "127.0.0.1:$1" -n "$2" -s "$SESSIONS" -from "$3" -senders "$4" \
		-to 'rcpt%d@dest.test' -rcpts 500 -timeout 30m 2>>"$WORK/qfill.log"
}

declare -A T # T[op,run] = seconds
MAMORI_BUILT=
MAMORI_FILL=
PF_FILL=

# --- mamori ------------------------------------------------------------------
if has_server mamori; then
	M=$WORK/mamori
	build_mamori "$M" "$WORK/src"
	init_mamori "$M" "$P_SMTP" "$P_SUB" "$P_SUBS" "$P_ADMIN"
	# 127.0.0.1 may relay (like Postfix's mynetworks), dest.test goes to a
	# closed port, retries wait an hour (nothing is due while we measure).
	sed -i 's/^trusted_networks = \[\]$/trusted_networks = ["127.0.0.0\/8"]/' "$MCONF"
	sed -i 's/^# "partner.example" = .*/"dest.test" = "127.0.0.1:'"$P_DEAD"'"/' "$MCONF"
	sed -i 's/^max_lifetime = .*/&\nmin_backoff = "1h"\nmax_backoff = "2h"/' "$MCONF"
	# One client IP sends everything, and one sender sends 10,000: lift the
	# guard's rate limits, or it would (rightly) isolate the abuser and hold
	# its mail; this benchmark is about the queue, not the guard.
	sed -i -E 's/^(msgs_per_minute|rcpts_per_minute|rcpts_per_hour|rcpts_per_day) = .*/\1 = 100000000/' "$MCONF"
	raise_guard_limits "$MCONF" new_rcpts_per_minute=100000000 hold_cap=10000000
	grep -q '^"dest.test" = ' "$MCONF" || die "could not set [delivery.routes] in $MCONF"
	grep -q '^trusted_networks = \["127' "$MCONF" || die "could not set [relay] trusted_networks in $MCONF"
	start_mamori "$M" "$P_SMTP"

	mq() { "$M/mamori" queue "$@" --config "$MCONF"; }
	m_settle() { # wait until nothing is due for delivery
		local deadline=$((SECONDS + SETTLE_TIMEOUT)) a
		while :; do
			a=$(mq list --state active --count)
			[[ $a == 0 ]] && return 0
			((SECONDS < deadline)) || die "mamori: $a messages still active after ${SETTLE_TIMEOUT}s"
			sleep 1
		done
	}
	m_check() { # label abuser-total abuser-held total
		expect "mamori $1: from $ABUSER" "$(mq list --from "$ABUSER" --count)" "$2"
		expect "mamori $1: held" "$(mq list --state held --count)" "$3"
		expect "mamori $1: total" "$(mq list --count)" "$4"
	}

	wait_idle
	log "mamori: filling $OTHERS messages from $SENDERS senders and $ABUSE from $ABUSER"
	t0=$SECONDS
	fill "$P_SMTP" "$OTHERS" 'user%d@senders.test' "$SENDERS"
	fill "$P_SMTP" "$ABUSE" "$ABUSER" 1
	m_settle
	MAMORI_FILL=$((SECONDS - t0))
	m_check "after fill" "$ABUSE" 0 "$N"
	expect "mamori after fill: deferred" "$(mq list --state deferred --count)" "$N"

	MB="$M/mamori queue"
	TOKEN=$(cat "$M/inst/admin.token")
	MC="--config $MCONF"
	for r in $(seq 1 "$RUNS"); do
		log "mamori: run $r"
		T[m_count,$r]=$(timed m_count "$MB list --from $ABUSER --count $MC")
		expect "mamori list --count output" "$(cat "$WORK/out.m_count")" "$ABUSE"
		T[m_json,$r]=$(timed m_json "$MB list --from $ABUSER --json $MC")
		expect "mamori list --json entries" "$(jq length "$WORK/out.m_json")" "$ABUSE"
		# Where the time goes: the same list straight from the admin API.
		T[m_curl,$r]=$(timed m_curl "curl -sf -H 'Authorization: Bearer $TOKEN' 'http://127.0.0.1:$P_ADMIN/api/v1/queue?from=$ABUSER'")
		expect "admin API list entries" "$(jq length "$WORK/out.m_curl")" "$ABUSE"
		T[m_hold,$r]=$(timed m_hold "$MB hold --from $ABUSER $MC")
		m_check "after hold" "$ABUSE" "$ABUSE" "$N"
		T[m_release,$r]=$(timed m_release "$MB release --from $ABUSER $MC")
		m_check "after release" "$ABUSE" 0 "$N"
		m_settle # released mail is due again: let it be deferred before the next step
		T[m_delete,$r]=$(timed m_delete "$MB delete --from $ABUSER --yes $MC")
		m_check "after delete" 0 0 "$OTHERS"
		log "mamori run $r: count ${T[m_count,$r]}s, json ${T[m_json,$r]}s, hold ${T[m_hold,$r]}s, release ${T[m_release,$r]}s, delete ${T[m_delete,$r]}s"
		if ((r < RUNS)); then
			fill "$P_SMTP" "$ABUSE" "$ABUSER" 1
			m_settle
			m_check "after refill" "$ABUSE" 0 "$N"
		fi
	done
	stop_mamori
fi

# --- Postfix -----------------------------------------------------------------
if has_server postfix; then
	P=$WORK/postfix
	mkdir -p "$P/etc" "$P/spool" "$P/data"
	chown postfix "$P/data"
	cp /etc/postfix/master.cf "$P/etc/master.cf"
	PF_VERSION=$(postconf -d -h mail_version 2>/dev/null || echo "?")
	{
		echo "# Stock Postfix $PF_VERSION, private instance for bench/queue-surgery.sh."
		echo "# Relays for 127.0.0.0/8 to a closed port: everything ends up deferred."
		postfix_main_cf "$P" "[127.0.0.1]:$P_DEAD"
		cat <<EOF
smtpd_client_message_rate_limit = 0
minimal_backoff_time = 1h
maximal_backoff_time = 2h
queue_run_delay = 1h
EOF
	} >"$P/etc/main.cf"
	start_postfix "$P" "$P_PF"
	export MAIL_CONFIG=$PF_CONF # postqueue, postsuper and mailq use the private instance

	p_settle() { # wait until incoming and active are empty (everything deferred or held)
		local deadline=$((SECONDS + SETTLE_TIMEOUT)) a
		while :; do
			a=$(find "$P/spool/incoming" "$P/spool/active" "$P/spool/maildrop" -type f | wc -l)
			[[ $a == 0 ]] && return 0
			((SECONDS < deadline)) || die "postfix: $a messages still incoming/active after ${SETTLE_TIMEOUT}s"
			sleep 1
		done
	}
	p_check() { # label abuser-total abuser-held total
		local s
		s=$(postqueue -j | jq -rs --arg a "$ABUSER" \
			'"\([.[] | select(.sender==$a)] | length) \([.[] | select(.queue_name=="hold")] | length) \(length)"')
		read -r pa ph pt <<<"$s"
		expect "postfix $1: from $ABUSER" "$pa" "$2"
		expect "postfix $1: held" "$ph" "$3"
		expect "postfix $1: total" "$pt" "$4"
	}

	wait_idle
	log "postfix: filling $OTHERS messages from $SENDERS senders and $ABUSE from $ABUSER"
	t0=$SECONDS
	fill "$P_PF" "$OTHERS" 'user%d@senders.test' "$SENDERS"
	fill "$P_PF" "$ABUSE" "$ABUSER" 1
	p_settle
	PF_FILL=$((SECONDS - t0))
	p_check "after fill" "$ABUSE" 0 "$N"

	JQSEL="postqueue -j | jq -r 'select(.sender==\"$ABUSER\") | .queue_id'"
	AWK="mailq | tail -n +2 | awk 'BEGIN { RS = \"\" } / abuser@bad\\.test/ { print \$1 }' | tr -d '*!' | postsuper -d -"
	for r in $(seq 1 "$RUNS"); do
		log "postfix: run $r"
		T[p_count,$r]=$(timed p_count "$JQSEL | wc -l")
		expect "postfix jq count output" "$(tr -d ' ' <"$WORK/out.p_count")" "$ABUSE"
		T[p_hold,$r]=$(timed p_hold "$JQSEL | postsuper -h -")
		p_check "after hold" "$ABUSE" "$ABUSE" "$N"
		T[p_release,$r]=$(timed p_release "$JQSEL | postsuper -H -")
		p_check "after release" "$ABUSE" 0 "$N"
		p_settle
		T[p_delete_jq,$r]=$(timed p_delete_jq "$JQSEL | postsuper -d -")
		p_check "after jq delete" 0 0 "$OTHERS"
		fill "$P_PF" "$ABUSE" "$ABUSER" 1
		p_settle
		p_check "after refill" "$ABUSE" 0 "$N"
		T[p_delete_awk,$r]=$(timed p_delete_awk "$AWK")
		p_check "after mailq|awk delete" 0 0 "$OTHERS"
		fill "$P_PF" "$ABUSE" "$ABUSER" 1
		p_settle
		p_check "after refill" "$ABUSE" 0 "$N"
		log "postfix run $r: jq count ${T[p_count,$r]}s, hold ${T[p_hold,$r]}s, release ${T[p_release,$r]}s, jq delete ${T[p_delete_jq,$r]}s, mailq|awk delete ${T[p_delete_awk,$r]}s"
	done
	T[p_delete_all,1]=$(timed p_delete_all "postsuper -d ALL")
	expect "postfix after postsuper -d ALL: total" "$(postqueue -j | wc -l)" 0
	log "postfix: postsuper -d ALL on $N: ${T[p_delete_all,1]}s"
fi

# --- report ------------------------------------------------------------------
row() { # label op target
	local label=${1//|/\\|} op=$2 target=$3 cells="" vals=() r v med met
	for r in $(seq 1 "$RUNS"); do
		v=${T[$op,$r]:-}
		cells+=" ${v:--} |"
		[[ -n $v ]] && vals+=("$v")
	done
	if ((${#vals[@]})); then
		med=$(printf '%s\n' "${vals[@]}" | sort -g | python3 -c 'import sys, statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")')
	else
		med=-
	fi
	met=
	if [[ -n $target ]]; then
		met=$(python3 -c "print('yes' if max([${vals[*]/%/,}]) < $target else 'no')" 2>/dev/null || echo -)
		met=" $met |"
	fi
	echo "| $label |$cells $med |$met"
}
fsdesc() {
	local src fstype opts
	read -r src fstype opts < <(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$1")
	echo "$fstype ($opts) on $src"
}
hdr() {
	local h="| operation |" s="| --- |" r
	for r in $(seq 1 "$RUNS"); do h+=" run $r (s) |"; s+=" ---: |"; done
	echo "$h median (s) |$1"
	echo "$s ---: |$2"
}
OUT=$(report_path queue-surgery)
{
	echo "# Queue surgery: $N messages, $ABUSE from one sender ($(date -u +'%Y-%m-%d %H:%M UTC'))"
	echo
	echo "Command: \`$(printf 'BENCH_FS=%s BENCH_N=%s BENCH_ABUSE=%s BENCH_RUNS=%s%s bash bench/queue-surgery.sh' "$FS_MODE" "$N" "$ABUSE" "$RUNS" "${BENCH_MAMORI_REF:+ BENCH_MAMORI_REF=$BENCH_MAMORI_REF}")\`"
	echo
	echo "Queue: $OTHERS messages from $SENDERS senders + $ABUSE from $ABUSER, ~1.4 KiB each, all"
	echo "deferred (next hop a closed 127.0.0.1 port). Wall-clock seconds per command,"
	echo "against the running server; counts verified after every step."
	echo
	machine_rows
	echo "| work dir | $(fsdesc "$WORK") |"
	[[ $FS_MODE == loop ]] && echo "| server filesystems | each server on its own fresh $FS_SIZE loop-mounted ext4 in the work dir |"
	echo "| Postfix | $(postconf -d -h mail_version 2>/dev/null || echo "?") (Debian $(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo "?")), jq $(jq --version 2>/dev/null) |"
	mamori_row
	echo "| fill time (SMTP, $SESSIONS sessions, until settled) | mamori ${MAMORI_FILL:--} s, Postfix ${PF_FILL:--} s |"
	echo
	if has_server mamori; then
		echo "## mamori (target: each < 1 s)"
		echo
		hdr " < 1 s every run |" " :---: |"
		row "\`mamori queue list --from $ABUSER --count\`" m_count 1
		row "\`mamori queue list --from $ABUSER --json > /dev/null\`" m_json 1
		row "\`mamori queue hold --from $ABUSER\`" m_hold 1
		row "\`mamori queue release --from $ABUSER\`" m_release 1
		row "\`mamori queue delete --from $ABUSER --yes\`" m_delete 1
		echo
		echo "For comparison, not a target: the JSON list straight from the admin API, without the CLI:"
		echo
		hdr "" ""
		row "\`curl -H 'Authorization: Bearer …' 'http://127.0.0.1:PORT/api/v1/queue?from=$ABUSER'\`" m_curl ""
		echo
	fi
	if has_server postfix; then
		echo "## Postfix"
		echo
		hdr "" ""
		row "\`postqueue -j | jq -r 'select(.sender==\"$ABUSER\") | .queue_id' | wc -l\` (list/count)" p_count ""
		row "\`postqueue -j | jq … | postsuper -h -\` (hold)" p_hold ""
		row "\`postqueue -j | jq … | postsuper -H -\` (release)" p_release ""
		row "\`postqueue -j | jq … | postsuper -d -\` (delete)" p_delete_jq ""
		row "\`mailq | tail -n +2 | awk 'BEGIN { RS = \"\" } / abuser@bad\\.test/ { print \$1 }' | tr -d '*!' | postsuper -d -\`" p_delete_awk ""
		row "\`postsuper -d ALL\` (all $N, once, last)" p_delete_all ""
	fi
} >"$OUT"
finish_report "$OUT"
