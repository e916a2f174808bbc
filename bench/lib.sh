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
#   SERVERS     "mamori postfix", "mamori dovecot" or a subset
#   WORK_BASE   parent of the work dir
#   FS_MODE     loop or dir
#   FS_SIZE     size of each loop image
#   KEEP_WORK   1: keep the work dir after a successful run
#   OUT_DIR     where report_path puts results
# and they set WORK, MOUNTS, MAMORI_PID, PF_CONF, DC_CONF, BG_PIDS, OK
# (cleanup state), MAMORI_BUILT, MCONF, PF_DEB_VERSION, SMTP_SOURCE and
# DC_VERSION.
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
	DC_CONF=
	BG_PIDS=() # helper processes (load generators) the script started in the background
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

stop_bg() { # TERM the BG_PIDS still running, KILL after 5 s
	local pid
	for pid in "${BG_PIDS[@]}"; do
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
	done
	BG_PIDS=()
	return 0
}

# stop_dovecot: TERM the private Dovecot's master (it stops its children),
# KILL it after 10 s, then KILL any child still left.
stop_dovecot() {
	local pidfile pid='' k alive
	local -a kids=()
	[[ -n ${DC_CONF:-} ]] || return 0
	pidfile=$(dirname "$DC_CONF")/run/master.pid
	[[ -f $pidfile ]] && pid=$(tr -dc 0-9 <"$pidfile")
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		mapfile -t kids < <(tree_pids "$pid" | tail -n +2)
		kill -TERM "$pid"
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
		for _ in $(seq 1 50); do # children exit once the master is gone
			alive=0
			for k in "${kids[@]}"; do kill -0 "$k" 2>/dev/null && alive=1; done
			[[ $alive -eq 1 ]] || break
			sleep 0.1
		done
		for k in "${kids[@]}"; do kill -KILL "$k" 2>/dev/null; done
	fi
	DC_CONF=
	return 0
}

# cleanup is the EXIT trap: stop the helpers and the servers, keep their
# logs, unmount the loop filesystems, and remove the work dir after a
# successful run (OK=1) unless BENCH_KEEP_WORK=1. It exits with the script's
# status.
cleanup() {
	local rc=$? mp
	set +e
	stop_bg
	stop_mamori
	stop_postfix
	stop_dovecot
	mkdir -p "$WORK/logs"
	cp "$WORK/mamori/mamori.log" "$WORK/postfix/maillog" "$WORK/dovecot/dovecot.log" "$WORK/logs/" 2>/dev/null
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

# start_scraper URL TOKEN_FILE LOG: a stand-in for Prometheus, in the
# background (in BG_PIDS, so cleanup stops it): GET URL with the admin
# token as a Bearer token once a second, each request capped at 5 s, at
# most 3600 times; one line per scrape in LOG: "HTTP-status bytes".
start_scraper() {
	local url=$1 token_file=$2 out=$3
	: >"$out"
	(
		for _ in $(seq 1 3600); do
			curl -s -o /dev/null -m 5 -w '%{http_code} %{size_download}\n' \
				-H "Authorization: Bearer $(cat "$token_file")" "$url" >>"$out" || true # curl writes "000 0" itself when it fails
			sleep 1
		done
	) &
	BG_PIDS+=($!)
	log "scraping $url once a second (pid $!)"
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


# --- IMAP: Dovecot, imaptest, idle connections ------------------------------

# install_dovecot: apt-get install Debian's dovecot-imapd if it is missing,
# and make sure no system Dovecot runs (the package's postinst may start
# one); sets DC_VERSION. The private instance is started by start_dovecot.
install_dovecot() {
	if ! dpkg -s dovecot-imapd >/dev/null 2>&1; then
		log "installing dovecot-imapd"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd \
			>"$WORK/apt-dovecot.log" 2>&1 || {
			apt-get update -qq
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dovecot-imapd \
				>"$WORK/apt-dovecot.log" 2>&1
		} || die "apt-get install dovecot-imapd failed, see $WORK/apt-dovecot.log"
	fi
	if [[ -f /run/dovecot/master.pid ]] && kill -0 "$(tr -dc 0-9 </run/dovecot/master.pid)" 2>/dev/null; then
		log "stopping the system Dovecot the package started"
		doveadm stop >/dev/null 2>&1 || true
	fi
	if command -v systemctl >/dev/null; then
		systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
	fi
	# shellcheck disable=SC2034 # used by the sourcing script
	DC_VERSION="$(dovecot --version) (Debian package $(dpkg-query -W -f='${Version}' dovecot-imapd))"
}

# dovecot_conf DIR USER PASSWORD: the config of a private stock Dovecot in
# DIR: DIR/dovecot.conf (base_dir DIR/run, state_dir DIR/state, log
# DIR/dovecot.log), a self-signed ECDSA P-256 certificate (the key type
# mamori init makes), ssl = required, and one virtual user in a passwd-file,
# mail in DIR/mail/DOMAIN/LOCALPART as Maildir++ owned by nobody:nogroup.
# The password hash: Argon2id with mamori's parameters, made by $IMAPIDLE
# -hash, unless DC_HASH=doveadm (then `doveadm pw -s ARGON2ID`, Dovecot's
# own defaults, or SHA512-CRYPT without Argon2 support). Listeners and
# limits are up to the caller: append them to DIR/dovecot.conf.
dovecot_conf() {
	local d=$1 user=$2 password=$3 uid gid hash
	uid=$(id -u nobody)
	gid=$(getent group nogroup | cut -d: -f3)
	mkdir -p "$d/run" "$d/state" "$d/mail"
	chown nobody:nogroup "$d/mail"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
		-subj /CN=dovecot.bench.test -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null
	chmod 600 "$d/key.pem"
	if [[ ${DC_HASH:-mamori} == doveadm ]]; then
		hash=$(doveadm pw -s ARGON2ID -p "$password" 2>/dev/null) ||
			hash=$(doveadm pw -s SHA512-CRYPT -p "$password")
	else
		hash=$(printf %s "$password" | "$IMAPIDLE" -hash)
	fi
	printf '%s:%s:%s:%s::%s\n' "$user" "$hash" "$uid" "$gid" "$d/home/${user#*@}/${user%@*}" >"$d/users"
	chmod 640 "$d/users"
	chgrp dovecot "$d/users"
	cat >"$d/dovecot.conf" <<EOF
# Private stock Dovecot $(dovecot --version) for bench/. Built-in defaults
# (Debian's conf.d is not read) except what a private instance needs.
base_dir = $d/run
state_dir = $d/state
instance_name = dovecot-bench
log_path = $d/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <$d/cert.pem
ssl_key = <$d/key.pem
mail_location = maildir:$d/mail/%d/%n
mail_uid = $uid
mail_gid = $gid
passdb {
  driver = passwd-file
  args = $d/users
}
userdb {
  driver = passwd-file
  args = $d/users
}
EOF
}

# start_dovecot CONF PORT: start `dovecot -c CONF` and wait for its IMAPS
# greeting on 127.0.0.1:PORT. Sets DC_CONF, so cleanup stops it.
start_dovecot() {
	local conf=$1 port=$2 d
	d=$(dirname "$conf")
	doveconf -n -c "$conf" >"$d/doveconf.log" 2>&1 || die "doveconf rejects $conf, see $d/doveconf.log"
	DC_CONF=$conf
	dovecot -c "$conf" >"$d/start.log" 2>&1 || die "dovecot did not start, see $d/start.log and $d/dovecot.log"
	wait_imaps "$port" 30 || die "dovecot did not answer IMAPS on 127.0.0.1:$port, see $d/dovecot.log"
	log "dovecot listening on 127.0.0.1:$port (imaps; master pid $(dovecot_pid))"
}

dovecot_pid() { tr -dc 0-9 <"$(dirname "$DC_CONF")/run/master.pid"; } # the master's pid

wait_imaps() { # port seconds: wait for an IMAP greeting over implicit TLS
	python3 - "$1" "$2" <<'EOF' || return 1
import socket, ssl, sys, time
port, deadline = int(sys.argv[1]), time.time() + float(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with ctx.wrap_socket(raw) as s:
                if s.recv(512).startswith(b"* OK"):
                    s.sendall(b"a LOGOUT\r\n")
                    s.recv(512)
                    sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}

# build_imaptest DIR: Dovecot's imaptest (with the imap-stress wrapper) in
# DIR, built by the shared tools' build.sh unless DIR/bin/imaptest exists.
build_imaptest() {
	local build=${BENCH_IMAPTEST_BUILD:-$REPO/../shared/tools/imaptest/build.sh}
	if [[ ! -x $1/bin/imaptest || ! -x $1/imap-stress ]]; then
		[[ -f $build ]] || die "no imaptest in $1 and no $build (set BENCH_IMAPTEST_BUILD)"
		log "building imaptest into $1"
		bash "$build" "$1" >"$WORK/imaptest-build.log" 2>&1 || die "imaptest build failed, see $WORK/imaptest-build.log"
	fi
}

# build_imapidle DIR: bench/imapidle (idle IMAPS connections; Argon2id
# hashes for Dovecot) into DIR/imapidle; sets IMAPIDLE.
build_imapidle() {
	mkdir -p "$1"
	(cd "$REPO" && go build -o "$1/imapidle" ./bench/imapidle)
	IMAPIDLE=$1/imapidle
}

tree_pids() { # pid: print pid and its live descendants, one a line
	python3 - "$1" <<'EOF'
import os, sys
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        kids.setdefault(ppid, []).append(int(d))
root = int(sys.argv[1])
todo = [root] if os.path.exists(f"/proc/{root}") else []
while todo:
    pid = todo.pop()
    print(pid)
    todo.extend(kids.get(pid, []))
EOF
}

# tree_mem PID: memory of PID and its descendants, one line:
#   RSS_KIB PSS_KIB NPROCS NAME=RSS_KIB/COUNT...
# RSS counts pages shared between processes (libraries, a forked parent's
# pages) once per process; PSS divides them among the processes sharing
# them, so it adds up to what the tree really holds.
tree_mem() {
	# shellcheck disable=SC2046 # one pid per word
	python3 - $(tree_pids "$1") <<'EOF'
import sys
def kib(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0
rss = pss = n = 0
by = {}
for pid in sys.argv[1:]:
    try:
        r = kib(f"/proc/{pid}/status", "VmRSS")
        p = kib(f"/proc/{pid}/smaps_rollup", "Pss")
        with open(f"/proc/{pid}/comm") as f:
            name = f.read().strip()
    except OSError:
        continue
    rss, pss, n = rss + r, pss + p, n + 1
    c = by.setdefault(name, [0, 0])
    c[0] += r
    c[1] += 1
print(rss, pss, n, " ".join(f"{k}={v[0]}/{v[1]}" for k, v in sorted(by.items())))
EOF
}
