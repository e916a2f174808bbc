#!/usr/bin/env bash
# smtp-accept.sh — durable accepted messages per second, mamori vs stock Postfix.
#
# Both servers run side by side on loopback on this machine, with fsync on
# (mamori fsyncs every message before its 250; Postfix's cleanup fsyncs the
# queue file before its 250). Postfix's own load generator, smtp-source, sends
# 1 KiB messages, one message per connection, at 1, 10 and 50 sessions. For
# every run the script records:
#   - accepted:  N / wall time of smtp-source (it exits non-zero unless every
#                message got a 2xx, so this is "durably accepted" per second);
#   - delivered: N / time until all N messages sit in the recipient's Maildir
#                new/ (counted from the start of the run).
#
# Needs root: it runs apt-get (download smtp-source; install the postfix package
# with debconf preseeded to "No configuration", so no system service is set up)
# and starts a private Postfix instance whose config and queue live in the work
# dir. Everything listens on 127.0.0.1 only, on free ports. Every process the
# script starts is stopped on exit, also on failure or Ctrl-C.
#
# Environment (all optional):
#   BENCH_N1=2000 BENCH_N10=5000 BENCH_N50=5000   messages per run at 1/10/50 sessions
#   BENCH_SESSIONS="1 10 50"                      session counts to run
#   BENCH_SIZE=1024                               message size in bytes (smtp-source -l)
#   BENCH_SERVERS="mamori postfix"                which servers to measure
#   BENCH_WARMUP=200                              warm-up messages per server (0: none)
#   BENCH_SEND_TIMEOUT=600                        max seconds for one smtp-source run
#   BENCH_DELIVERY_TIMEOUT=300                    max seconds to wait for Maildir delivery
#   BENCH_FS=loop                                 loop: each server's data on its own fresh
#                                                 ext4 (default mkfs options, so with a
#                                                 journal) in an image file in the work dir;
#                                                 dir: straight in the work dir's filesystem
#   BENCH_FS_SIZE=2G                              size of each loop image
#   BENCH_WORK_BASE=/var/tmp                      where the work dir is made (must be a
#                                                 real disk: fsync on tmpfs is free)
#   BENCH_KEEP_WORK=0                             1: keep the work dir (logs, spools)
#   BENCH_OUT=<repo>/bench/out                    where the Markdown result goes
#   BENCH_MAMORI_REF=                             build mamori from this git commit (e.g. HEAD)
#                                                 instead of the working tree
#   BENCH_MAMORI_BIN=                             use this mamori binary instead of building
#                                                 one (e.g. a profiling build)
#   BENCH_SCRAPE=0                                1: while mamori is measured, a Prometheus-like
#                                                 scraper GETs /metrics (admin token) once a
#                                                 second (issue 14: the cost of metrics)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N1=${BENCH_N1:-2000}
N10=${BENCH_N10:-5000}
N50=${BENCH_N50:-5000}
SESSIONS=${BENCH_SESSIONS:-1 10 50}
SIZE=${BENCH_SIZE:-1024}
SERVERS=${BENCH_SERVERS:-mamori postfix}
WARMUP=${BENCH_WARMUP:-200}
SEND_TIMEOUT=${BENCH_SEND_TIMEOUT:-600}
DELIVERY_TIMEOUT=${BENCH_DELIVERY_TIMEOUT:-300}
WORK_BASE=${BENCH_WORK_BASE:-/var/tmp}
FS_MODE=${BENCH_FS:-loop}
FS_SIZE=${BENCH_FS_SIZE:-2G}
KEEP_WORK=${BENCH_KEEP_WORK:-0}
SCRAPE=${BENCH_SCRAPE:-0}
OUT_DIR=${BENCH_OUT:-$REPO/bench/out}
FROM=sender@outside.test
RCPT=sink@bench.test

LOG_NAME=smtp-accept
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

need_root "apt-get and a private Postfix instance need it"
need_commands go python3 apt-get dpkg dpkg-deb debconf-set-selections git findmnt
make_work mamori-bench

# --- 1. smtp-source from Debian's postfix package, no install ----------------
log "downloading the postfix package for smtp-source"
fetch_postfix_pkg

# --- 2. stock Postfix, same package version, no system service ---------------
if has_server postfix; then
	installed=$(dpkg-query -W -f='${Status} ${Version}' postfix 2>/dev/null || true)
	if [[ $installed != "install ok installed $PF_DEB_VERSION" ]]; then
		install_postfix "$PF_DEB_VERSION"
	fi
	if python3 - <<'EOF'; then
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 25)) == 0 else 1)
EOF
		log "warning: something listens on 127.0.0.1:25 (a system MTA?); it is not used here but competes for CPU"
	fi
fi

# --- a filesystem per server -------------------------------------------------
# $WORK/mamori and $WORK/postfix hold everything each server writes (queue,
# Maildir). With BENCH_FS=loop each is a fresh journaled ext4 of its own, so
# neither server's file churn (nor an earlier run's cleanup) shapes the
# other's inode and block allocation.
# shellcheck disable=SC2119 # default mkfs options
server_filesystems

# --- free loopback ports -----------------------------------------------------
ports=$(free_ports 5)
read -r P_SMTP P_SUB P_SUBS P_ADMIN P_PF <<<"$ports"

# --- 3. mamori ---------------------------------------------------------------
MAMORI_NEW=
MAMORI_BUILT=
if has_server mamori; then
	M=$WORK/mamori
	build_mamori "$M" "$M/src"
	init_mamori "$M" "$P_SMTP" "$P_SUB" "$P_SUBS" "$P_ADMIN"
	# All load comes from one client IP, 127.0.0.1: lift the guard's per-IP
	# and per-network limits (the same way Postfix's anvil limits are lifted
	# below). The guard still runs on every connection and message; the
	# pre-greet test is left on (its verdict is cached per IP, so only the
	# first connection waits).
	raise_guard_limits "$MCONF"
	head -c 24 /dev/urandom | base64 | "$M/mamori" user add "$RCPT" --password-stdin --config "$MCONF" >"$M/user.log"
	DATA=$(sed -n 's/^data_dir = "\(.*\)"$/\1/p' "$MCONF")
	[[ -n $DATA ]] || die "no data_dir in $MCONF"
	MAMORI_NEW=$DATA/mail/bench.test/sink/new
	start_mamori "$M" "$P_SMTP"
	if [[ $SCRAPE == 1 ]]; then
		TOKEN_FILE=$(sed -n 's/^token_file = "\(.*\)"$/\1/p' "$MCONF")
		[[ -r $TOKEN_FILE ]] || die "no admin token file in $MCONF"
		start_scraper "http://127.0.0.1:$P_ADMIN/metrics" "$TOKEN_FILE" "$WORK/scrapes"
	fi
fi

# --- 4. Postfix instance -----------------------------------------------------
PF_NEW=
PF_PID=
if has_server postfix; then
	P=$WORK/postfix
	mkdir -p "$P/etc" "$P/spool" "$P/data" "$P/vmail"
	chown postfix "$P/data"
	chown nobody:nogroup "$P/vmail"
	cp /etc/postfix/master.cf "$P/etc/master.cf"
	printf '%s %s\n' "$RCPT" "sink/" >"$P/etc/vmailbox"
	{
		echo "# Stock Postfix $PF_DEB_VERSION, private instance for bench/smtp-accept.sh."
		echo "# Only what a virtual-mailbox MX for bench.test needs; fsync etc. at defaults."
		postfix_main_cf "$P" ""
		cat <<EOF
virtual_mailbox_domains = bench.test
virtual_mailbox_maps = texthash:$P/etc/vmailbox
virtual_mailbox_base = $P/vmail
virtual_uid_maps = static:$(id -u nobody)
virtual_gid_maps = static:$(getent group nogroup | cut -d: -f3)
EOF
	} >"$P/etc/main.cf"
	start_postfix "$P" "$P_PF"
	PF_NEW=$P/vmail/sink/new
	PF_PID=$(tr -dc 0-9 <"$P/spool/pid/master.pid")
fi

# --- 5. measure --------------------------------------------------------------
cat >"$WORK/measure.py" <<'EOF'
"""Run smtp-source once, then wait until all messages are in Maildir new/.

Prints six numbers: accepted_s delivered_s server_cpu_s client_cpu_s
machine_busy_s machine_iowait_s. The first two are wall times from the start
of the run (smtp-source done; all N files in new/). The CPU times cover the
whole run (acceptance and delivery): server = the server's process tree
(mamori; Postfix's master and all its children, live or reaped), client =
smtp-source, machine = every CPU's busy and I/O-wait time from /proc/stat.
Machine busy minus server and client is kernel threads (block I/O, journal)
and anything else running on the machine. A seventh number, with JBD2_INFO
set to the server filesystem's /proc/fs/jbd2/DEV/info, is the number of ext4
journal commits during the run.
"""
import os, subprocess, sys, tempfile, threading, time

HZ = os.sysconf("SC_CLK_TCK")

def machine():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:7]) - v[3] - v[4]) / HZ, v[4] / HZ  # steal not counted

def commits():
    path = os.environ.get("JBD2_INFO")
    if not path:
        return 0
    with open(path) as f:
        return int(f.readline().split()[0])

def tree_cpu(root):
    """CPU seconds of root, its live descendants, and the reaped ones."""
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        stats[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    children = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(children.get(pid, []))
    return total / HZ

newdir, n = sys.argv[1], int(sys.argv[2])
send_timeout, delivery_timeout = float(sys.argv[3]), float(sys.argv[4])
server_pid = int(sys.argv[5])
cmd = sys.argv[6:]

def count():
    try:
        with os.scandir(newdir) as it:
            return sum(1 for _ in it)
    except FileNotFoundError:
        return 0

out = tempfile.TemporaryFile()
srv0, (busy0, wait0), jc0 = tree_cpu(server_pid), machine(), commits()
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
killer = threading.Timer(send_timeout, p.kill)
killer.start()
_, status, ru = os.wait4(p.pid, 0)
p.returncode = os.waitstatus_to_exitcode(status)
killer.cancel()
t1 = time.monotonic()
if p.returncode != 0:
    out.seek(0)
    sys.stderr.write(out.read()[-4000:].decode(errors="replace"))
    sys.exit(f"smtp-source exited {p.returncode} after {t1 - t0:.1f}s")
deadline = t1 + delivery_timeout
while True:
    c = count()
    if c >= n:
        break
    if time.monotonic() > deadline:
        sys.exit(f"only {c} of {n} messages in {newdir} after {delivery_timeout}s")
    time.sleep(0.01)
t2 = time.monotonic()
srv1, (busy1, wait1), jc1 = tree_cpu(server_pid), machine(), commits()
if c != n:
    sys.exit(f"{c} messages in {newdir}, expected {n}")
client = ru.ru_utime + ru.ru_stime
jc = str(jc1 - jc0) if os.environ.get("JBD2_INFO") else "-"
print(f"{t1 - t0:.3f} {t2 - t0:.3f} {srv1 - srv0:.2f} {client:.2f} {busy1 - busy0:.2f} {wait1 - wait0:.2f} {jc}")
EOF

# Empty a Maildir between runs by moving its new/ aside and making a fresh
# one (same owner and mode). Deleting thousands of files right before a run
# would make ext4 skip the recently freed inodes on every file creation
# during that run (recently_deleted() in the inode allocator), a cost that
# belongs to the cleanup, not to the server. The moved files go at exit.
clear_maildir() { # server
	local new md t
	new=$(newdir_of "$1")
	md=$(dirname "$new")
	[[ -d $new ]] || return 0
	mkdir -p "$WORK/$1/trash" # same filesystem as the Maildir: mv is a rename
	t=$(mktemp -d "$WORK/$1/trash/XXXXXX")
	mv "$new" "$t/new"
	mkdir "$new"
	chown --reference="$t/new" "$new"
	chmod --reference="$t/new" "$new"
	for d in cur tmp; do
		[[ -d $md/$d ]] && find "$md/$d" -mindepth 1 -maxdepth 1 -type f -delete
	done
	return 0
}

port_of() { case $1 in mamori) echo "$P_SMTP" ;; postfix) echo "$P_PF" ;; esac; }
newdir_of() { case $1 in mamori) echo "$MAMORI_NEW" ;; postfix) echo "$PF_NEW" ;; esac; }
pid_of() { case $1 in mamori) echo "$MAMORI_PID" ;; postfix) echo "$PF_PID" ;; esac; }
jbd2_of() { # the journal statistics of the server's own filesystem (loop mode)
	local src
	[[ $FS_MODE == loop ]] || return 0
	src=$(findmnt -no SOURCE "$WORK/$1")
	[[ -r /proc/fs/jbd2/$(basename "$src")-8/info ]] && echo "/proc/fs/jbd2/$(basename "$src")-8/info"
	return 0
}

# measure SERVER SESSIONS N -> the seven numbers measure.py prints
measure() {
	local server=$1 s=$2 n=$3 newdir
	newdir=$(newdir_of "$server")
	clear_maildir "$server"
	sync
	sleep 1
	JBD2_INFO=$(jbd2_of "$server") python3 "$WORK/measure.py" "$newdir" "$n" "$SEND_TIMEOUT" "$DELIVERY_TIMEOUT" "$(pid_of "$server")" \
		env LD_LIBRARY_PATH="$WORK/pkg/x/usr/lib/postfix" "$SMTP_SOURCE" \
		-s "$s" -l "$SIZE" -m "$n" -f "$FROM" -t "$RCPT" "127.0.0.1:$(port_of "$server")"
}

if [[ $WARMUP -gt 0 ]]; then
	for server in $SERVERS; do
		log "warm-up: $server, $WARMUP messages at 10 sessions"
		measure "$server" 10 "$WARMUP" >/dev/null
	done
fi

declare -A ACC DEL CPU
for s in $SESSIONS; do
	case $s in 1) n=$N1 ;; 10) n=$N10 ;; 50) n=$N50 ;; *) n=$N10 ;; esac
	for server in $SERVERS; do
		log "$server: $n messages, $s sessions"
		read -r acc del srv cli busy iowait jc < <(measure "$server" "$s" "$n")
		[[ -n ${iowait:-} ]] || die "measurement failed: $server, $s sessions"
		ACC[$server,$s]=$(python3 -c "print(f'{$n/$acc:.0f}')")
		DEL[$server,$s]=$(python3 -c "print(f'{$n/$del:.0f}')")
		# CPU ms per message: server, smtp-source, rest of the machine; machine busy and iowait in % of one CPU
		CPU[$server,$s]=$(python3 -c "print(f'{$srv*1000/$n:.2f} / {$cli*1000/$n:.2f} / {max(0, $busy-$srv-$cli)*1000/$n:.2f}; {$busy/$del*100:.0f}% busy, {$iowait/$del*100:.0f}% iowait')")
		[[ $jc != - ]] && CPU[$server,$s]+=$(python3 -c "print(f'; {$jc/$n:.2f} journal commits')")
		log "$server s=$s n=$n: accepted in ${acc}s (${ACC[$server,$s]}/s), delivered in ${del}s (${DEL[$server,$s]}/s); CPU ms/msg server / smtp-source / rest; machine: ${CPU[$server,$s]}"
	done
done

# --- 6. report ---------------------------------------------------------------
ratio() { python3 -c "print(f'{$1/$2:.2f}×')"; }
fsdesc() { # dir -> "ext4 (options), journal|no journal"
	local src fstype opts j=
	read -r src fstype opts < <(findmnt -no SOURCE,FSTYPE,OPTIONS -T "$1")
	if [[ $fstype == ext4 ]]; then
		j="no journal"
		[[ -d /proc/fs/jbd2/$(basename "$src")-8 ]] && j="journal"
	fi
	echo "$fstype${j:+, $j} ($opts)"
}

OUT=$(report_path smtp-accept)
{
	echo "# SMTP acceptance: mamori vs Postfix ($(date -u +'%Y-%m-%d %H:%M UTC'))"
	echo
	echo "Command: \`$(printf 'BENCH_FS=%s BENCH_N1=%s BENCH_N10=%s BENCH_N50=%s BENCH_SIZE=%s BENCH_SCRAPE=%s%s bash bench/smtp-accept.sh' "$FS_MODE" "$N1" "$N10" "$N50" "$SIZE" "$SCRAPE" "${BENCH_MAMORI_REF:+ BENCH_MAMORI_REF=$BENCH_MAMORI_REF}")\`"
	echo
	echo "Load: \`smtp-source -s S -l $SIZE -m N -f $FROM -t $RCPT 127.0.0.1:PORT\`"
	echo "(one message per connection), N = $N1 / $N10 / $N50 at S = 1 / 10 / 50;"
	echo "warm-up $WARMUP messages per server first. accepted = N / smtp-source wall time"
	echo "(every message got 250); delivered = N / time until N files in Maildir new/."
	echo
	machine_rows
	echo "| work dir filesystem | $(fsdesc "$WORK") on $(findmnt -no SOURCE -T "$WORK") |"
	if [[ $FS_MODE == loop ]]; then
		echo "| server filesystems | each server on its own fresh $FS_SIZE loop-mounted $(fsdesc "$WORK/${SERVERS%% *}") in the work dir |"
	fi
	echo "| Postfix | $(postconf -d -h mail_version 2>/dev/null || echo "?") (Debian package $PF_DEB_VERSION) |"
	mamori_row
	if [[ $SCRAPE == 1 ]]; then
		echo "| scraper | GET /metrics once a second during the run: $(wc -l <"$WORK/scrapes") scrapes, $(grep -vc '^200 ' "$WORK/scrapes" || true) not 200, $(awk '{ b += $2 } END { printf "%.0f", NR ? b / NR : 0 }' "$WORK/scrapes") bytes each |"
	fi
	echo
	echo "| sessions | N | mamori accepted/s | Postfix accepted/s | ratio | mamori accepted+delivered/s | Postfix accepted+delivered/s | ratio |"
	echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for s in $SESSIONS; do
		case $s in 1) n=$N1 ;; 10) n=$N10 ;; 50) n=$N50 ;; *) n=$N10 ;; esac
		ma=${ACC[mamori,$s]:-} pa=${ACC[postfix,$s]:-} md=${DEL[mamori,$s]:-} pd=${DEL[postfix,$s]:-}
		ra=- rd=-
		[[ -n $ma && -n $pa ]] && ra=$(ratio "$ma" "$pa")
		[[ -n $md && -n $pd ]] && rd=$(ratio "$md" "$pd")
		echo "| $s | $n | ${ma:--} | ${pa:--} | $ra | ${md:--} | ${pd:--} | $rd |"
	done
	echo
	echo "CPU per message over the whole run (accept + deliver), in ms: the server's"
	echo "process tree / smtp-source / the rest of the machine (kernel I/O threads and"
	echo "anything else running); then machine busy and I/O wait in % of one CPU ($(nproc) CPUs);"
	echo "with BENCH_FS=loop, ext4 journal commits per message on the server's filesystem:"
	echo
	echo "| sessions | mamori | Postfix |"
	echo "| ---: | --- | --- |"
	for s in $SESSIONS; do
		echo "| $s | ${CPU[mamori,$s]:--} | ${CPU[postfix,$s]:--} |"
	done
} >"$OUT"
finish_report "$OUT"
