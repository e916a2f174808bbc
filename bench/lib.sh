# shellcheck shell=bash
# lib.sh — plumbing shared by the bench/*.sh scripts, sourced, never run:
#
#   . "$(dirname "$0")/lib.sh"
#
# Both benchmarks set up the same things the same way (a work dir, a fresh
# filesystem per server, free loopback ports, a mamori built from a chosen
# ref, a private stock Postfix instance) and must tear all of it down again on
# any exit. Keeping that in one place keeps the scripts about their
# measurement, and keeps their setups from drifting apart.
#
# The functions read these globals, which the sourcing script sets from its
# BENCH_* environment before calling them:
#   LOG_NAME    prefix of log lines (the script's name)
#   REPO        the repository root
#   SERVERS     "mamori postfix" or a subset
#   WORK_BASE   parent of the work dir
#   FS_MODE     loop or dir
#   FS_SIZE     size of each loop image
#   KEEP_WORK   1: keep the work dir after a successful run
#   OUT_DIR     where report_path puts results
# and they set WORK, MOUNTS, MAMORI_PID, PF_CONF, OK (cleanup state),
# MAMORI_BUILT, MCONF, PF_DEB_VERSION and SMTP_SOURCE.
#
# Everything here works under the script's set -euo pipefail: the functions
# run their steps unconditionally (so a failing step ends the script, and the
# EXIT trap cleans up), and report expected failures through their status
# only where the caller tests it (wait_port ... || die).
# shellcheck disable=SC2154 # the globals above come from the sourcing script

log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$LOG_NAME" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

has_server() { [[ " $SERVERS " == *" $1 "* ]]; } # name: is it in $SERVERS?

need_root() { # why
	[[ $(id -u) -eq 0 ]] || die "run as root ($1)"
}

need_commands() { # command...: die unless all are on PATH; also checks BENCH_FS
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || die "missing command: $c"
	done
	case $FS_MODE in
	loop) for c in mkfs.ext4 mount umount mountpoint truncate; do
		command -v "$c" >/dev/null || die "missing command: $c (or use BENCH_FS=dir)"
	done ;;
	dir) ;;
	*) die "BENCH_FS must be loop or dir, not $FS_MODE" ;;
	esac
}

# --- work dir and cleanup ----------------------------------------------------

# make_work PREFIX: create the work dir $WORK_BASE/PREFIX.XXXXXX and arm the
# cleanup traps. Call it from the top level of the script, not in $(...).
make_work() {
	WORK=$(mktemp -d "$WORK_BASE/$1.XXXXXX")
	chmod 755 "$WORK" # Postfix daemons and the virtual delivery uid walk into it
	MAMORI_PID=
	PF_CONF=
	MOUNTS=()
	OK=0
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

stop_mamori() { # TERM, then KILL after 10 s
	if [[ -n $MAMORI_PID ]] && kill -0 "$MAMORI_PID" 2>/dev/null; then
		kill -TERM "$MAMORI_PID"
		for _ in $(seq 1 100); do kill -0 "$MAMORI_PID" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$MAMORI_PID" 2>/dev/null && kill -KILL "$MAMORI_PID"
		wait "$MAMORI_PID" 2>/dev/null
	fi
	MAMORI_PID=
	return 0
}

stop_postfix() { # postfix stop, then KILL the master after 10 s
	local pidfile=$WORK/postfix/spool/pid/master.pid pid=
	[[ -n $PF_CONF ]] || return 0
	[[ -f $pidfile ]] && pid=$(tr -dc 0-9 <"$pidfile")
	postfix -c "$PF_CONF" stop >/dev/null 2>&1
	if [[ -n $pid ]]; then
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	return 0
}

# cleanup is the EXIT trap: stop both servers, keep their logs, unmount the
# loop filesystems, and remove the work dir after a successful run (OK=1)
# unless BENCH_KEEP_WORK=1. It exits with the script's status.
cleanup() {
	local rc=$? mp
	set +e
	stop_mamori
	stop_postfix
	mkdir -p "$WORK/logs"
	cp "$WORK/mamori/mamori.log" "$WORK/postfix/maillog" "$WORK/logs/" 2>/dev/null
	for mp in "${MOUNTS[@]}"; do
		if mountpoint -q "$mp" && ! umount "$mp"; then
			log "could not unmount $mp"
			KEEP_WORK=1 # never rm -rf into a mounted filesystem
		else
			rm -f "$mp.img"
		fi
	done
	if [[ $OK -eq 1 && $KEEP_WORK != 1 ]]; then
		rm -rf "$WORK"
	else
		log "work dir kept: $WORK (logs in logs/)"
	fi
	exit "$rc"
}

# --- filesystems and ports ---------------------------------------------------

# server_filesystems [MKFS_OPTION...]: $WORK/SERVER for every server; with
# BENCH_FS=loop each is a fresh ext4 of its own (mkfs.ext4 -q -F plus the
# given options) in a $FS_SIZE image file in the work dir.
server_filesystems() {
	local server
	for server in $SERVERS; do
		mkdir -p "$WORK/$server"
		if [[ $FS_MODE == loop ]]; then
			truncate -s "$FS_SIZE" "$WORK/$server.img"
			mkfs.ext4 -q -F "$@" "$WORK/$server.img"
			MOUNTS+=("$WORK/$server")
			mount -o loop "$WORK/$server.img" "$WORK/$server"
			chmod 755 "$WORK/$server"
		fi
	done
}

free_ports() { # n: print n distinct free 127.0.0.1 ports
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() { # port seconds: wait for an SMTP greeting
	python3 - "$1" "$2" <<'EOF' || return 1
import socket, sys, time
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
while time.time() < deadline:
    s = socket.socket()
    s.settimeout(3)  # mamori's pre-greet test delays the first greeting
    if s.connect_ex(("127.0.0.1", port)) == 0:
        try:  # a polite SMTP probe: read the greeting, say QUIT
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                s.recv(512)
                sys.exit(0)
        except OSError:
            pass
    s.close()
    time.sleep(0.1)
sys.exit(1)
EOF
}

# --- Postfix -------------------------------------------------------------------

# fetch_postfix_pkg: download Debian's postfix package into $WORK/pkg and
# unpack it (no install); sets PF_DEB_VERSION and SMTP_SOURCE (run it with
# LD_LIBRARY_PATH=$WORK/pkg/x/usr/lib/postfix).
fetch_postfix_pkg() {
	local deb
	mkdir -p "$WORK/pkg"
	if ! (cd "$WORK/pkg" && apt-get download postfix >/dev/null 2>&1); then
		apt-get update -qq
		(cd "$WORK/pkg" && apt-get download postfix >/dev/null 2>&1) || die "apt-get download postfix failed"
	fi
	deb=$(ls "$WORK"/pkg/postfix_*.deb)
	# shellcheck disable=SC2034 # used by the sourcing script
	PF_DEB_VERSION=$(dpkg-deb -f "$deb" Version)
	dpkg -x "$deb" "$WORK/pkg/x"
	# shellcheck disable=SC2034 # used by the sourcing script
	SMTP_SOURCE=$WORK/pkg/x/usr/sbin/smtp-source
}

# install_postfix [VERSION]: apt-get install postfix (that version, if given)
# with debconf preseeded to "No configuration", so no system service is set up.
install_postfix() {
	log "installing postfix ${1:+$1 }(debconf: No configuration)"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postfix${1:+=$1}" >"$WORK/apt-install.log" 2>&1 ||
		die "apt-get install postfix failed, see $WORK/apt-install.log"
}

# postfix_main_cf DIR RELAYHOST: the main.cf lines both benchmarks share, for
# a private instance whose queue and logs live in DIR (append the rest).
postfix_main_cf() {
	cat <<EOF
compatibility_level = 3.6
queue_directory = $1/spool
data_directory = $1/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.local
mydomain = bench.local
myorigin = \$myhostname
mydestination =
alias_maps =
alias_database =
relayhost = $2
biff = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $1/maillog
maillog_file_prefixes = $1
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
EOF
}

# start_postfix DIR PORT: start the private instance configured in DIR/etc
# (main.cf and master.cf in place) with smtpd on 127.0.0.1:PORT and wait for
# its greeting. Sets PF_CONF, so cleanup stops it.
start_postfix() {
	local p=$1 port=$2
	PF_CONF=$p/etc
	# No chroot (it would need copies of /etc files inside the spool); smtpd
	# on the free loopback port instead of :25.
	postconf -c "$PF_CONF" -F '*/*/chroot = n'
	postconf -c "$PF_CONF" -MX smtp/inet
	postconf -c "$PF_CONF" -M "$port/inet = $port inet n - n - - smtpd"
	postfix -c "$PF_CONF" check >"$p/check.log" 2>&1 || die "postfix check failed, see $p/check.log"
	postfix -c "$PF_CONF" start >"$p/start.log" 2>&1 || die "postfix start failed, see $p/start.log"
	wait_port "$port" 30 || die "postfix did not listen on 127.0.0.1:$port, see $p/maillog"
	log "postfix listening on 127.0.0.1:$port"
}

# --- mamori --------------------------------------------------------------------

# build_mamori DIR SRC: build mamori into DIR/mamori from BENCH_MAMORI_BIN (a
# copy), BENCH_MAMORI_REF (git archive into SRC, then build) or the working
# tree; sets MAMORI_BUILT to what was built.
build_mamori() {
	local m=$1 src=$2
	log "building mamori"
	mkdir -p "$m"
	if [[ -n ${BENCH_MAMORI_BIN:-} ]]; then
		cp "$BENCH_MAMORI_BIN" "$m/mamori"
		MAMORI_BUILT="binary $BENCH_MAMORI_BIN"
	elif [[ -n ${BENCH_MAMORI_REF:-} ]]; then
		mkdir -p "$src"
		git -C "$REPO" archive "$BENCH_MAMORI_REF" | tar -x -C "$src"
		(cd "$src" && go build -o "$m/mamori" ./cmd/mamori)
		MAMORI_BUILT="commit $(git -C "$REPO" rev-parse --short "$BENCH_MAMORI_REF")"
	else
		(cd "$REPO" && go build -o "$m/mamori" ./cmd/mamori)
		MAMORI_BUILT="commit $(git -C "$REPO" rev-parse --short HEAD)"
		git -C "$REPO" diff --quiet HEAD 2>/dev/null || MAMORI_BUILT="$MAMORI_BUILT + uncommitted changes"
	fi
}

# init_mamori DIR SMTP SUBMISSION SUBMISSIONS ADMIN: mamori init for
# bench.test in DIR/inst on those 127.0.0.1 ports, log level warn (per-message
# info logs would measure the logger); sets MCONF.
init_mamori() {
	local m=$1
	"$m/mamori" init --dir "$m/inst" --domain bench.test --listen-host 127.0.0.1 \
		--smtp-port "$2" --submission-port "$3" --submissions-port "$4" \
		--admin-port "$5" >"$m/init.log"
	MCONF=$m/inst/mamori.toml
	# No mailbox access listeners unless a bench sets them (default ports
	# 143/993/110/995 may be taken or privileged).
	sed -i -E 's/^(imap|imaps|pop3|pop3s) = .*/\1 = ""/' "$MCONF"
	sed -i '/^\[log\]/,/^\[/ s/^level = .*/level = "warn"/' "$MCONF"
	grep -q '^level = "warn"' "$MCONF" || die "could not set [log] level in $MCONF"
	# Stock Postfix does no SPF/DKIM/DMARC checks, so for a like-for-like
	# comparison mamori's inbound verification is off too (it also keeps the
	# benchmark from querying the machine's DNS resolver for .test names).
	sed -i 's/^verify_inbound = true/verify_inbound = false/' "$MCONF"
}

# start_mamori DIR PORT: mamori serve with $MCONF, logging to DIR/mamori.log;
# waits for its greeting on 127.0.0.1:PORT. Sets MAMORI_PID.
start_mamori() {
	local m=$1 port=$2
	"$m/mamori" check-config --config "$MCONF" >/dev/null
	"$m/mamori" serve --config "$MCONF" >"$m/mamori.log" 2>&1 &
	MAMORI_PID=$!
	wait_port "$port" 30 || die "mamori did not listen on 127.0.0.1:$port, see $m/mamori.log"
	log "mamori listening on 127.0.0.1:$port (pid $MAMORI_PID)"
}

# --- report --------------------------------------------------------------------

machine_rows() { # the head of the machine table: CPU and kernel
	local cpu
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
	echo "| machine | |"
	echo "| --- | --- |"
	echo "| CPU | $(nproc) × $cpu |"
	echo "| kernel | $(uname -r) |"
}

mamori_row() { echo "| mamori | ${MAMORI_BUILT:--}, $(go version | awk '{print $3}') |"; }

report_path() { # name: create $OUT_DIR, print OUT_DIR/NAME-<date>.md
	mkdir -p "$OUT_DIR"
	echo "$OUT_DIR/$1-$(date +%Y%m%d-%H%M%S).md"
}

finish_report() { # path: print it, and mark the run successful
	cat "$1"
	log "wrote $1"
	OK=1
}

# raise_guard_limits CONF [KEY=VALUE...]: all load comes from 127.0.0.1,
# so lift the guard's per-IP connection and inbound limits (plus any extra
# keys given). The guard still runs on every connection and message. A config
# without a [guard] section (a commit from before the guard) is left alone.
raise_guard_limits() {
	local conf=$1 kv lines
	shift
	grep -q '^\[guard\]$' "$conf" || return 0
	lines="inbound_msgs_per_minute = 100000000
inbound_rcpts_per_minute = 100000000
conns_per_minute = 100000000
max_conns_per_ip = 100000
max_conns_per_net = 100000
max_connections = 100000"
	for kv in "$@"; do
		lines="${kv%%=*} = ${kv#*=}
$lines"
	done
	awk -v add="$lines" '{ print } $0 == "[guard]" { print add }' "$conf" >"$conf.tmp" && mv "$conf.tmp" "$conf"
}

