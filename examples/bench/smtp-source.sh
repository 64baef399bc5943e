#!/usr/bin/env bash
# Relay throughput of hubd (or of any MTA already listening) under Postfix's
# smtp-source load generator, with Postfix's smtp-sink as the next hop: the
# method of issue 11's table, with C tools that are light on the CPU the
# MTAs share with them.
#
#   examples/bench/smtp-source.sh                     # 5000 msgs, 10 sessions, through a fresh hubd
#   examples/bench/smtp-source.sh -m 20000 -s 50      # more messages, more sessions
#   examples/bench/smtp-source.sh -d                  # reuse each session for many messages
#   examples/bench/smtp-source.sh -d -s 20 -l 100000 -P 2
#                                                     # hubd against a private Postfix relay,
#                                                     # A B B A twice, median ratios (root)
#   examples/bench/smtp-source.sh -T 127.0.0.1:2525 -k 2526 -q 'postfix-relay.sh qsize'
#                                                     # load another MTA (e.g. a Postfix relay
#                                                     # that relays to the sink on port 2526)
#
# What a run does, in order:
#   1. builds hubd and hubctl (go build, the Makefile's tags) into a temporary
#      directory, once;
#   2. starts `smtp-sink` on 127.0.0.1:SINK_PORT (it accepts and discards mail),
#      once;
#   3. writes a hubd config: one receive connector on 127.0.0.1:PORT that lets
#      127.0.0.1/32 (and nobody else) relay anonymously, and one send connector
#      that relays everything to the sink with tls = "none"; starts hubd on it
#      with a fresh spool;
#   4. runs `smtp-source -c -l LEN -m N -s S -f a@x.test -t b@remote.test
#      127.0.0.1:PORT` and times it: smtp-source ends when the last message got
#      its 250 after DATA, so N / time is the *acceptance* rate (msgs/s);
#   5. polls the queue size every 0.1 s until it is 0 (at most 5 minutes) and
#      reports the *relay* rate: N / time from the first message to an empty
#      queue (hubd's count comes from `hubctl status`);
#   6. stops hubd (SIGTERM).
# With -T, steps 1 and 3 are skipped and the load goes to TARGET instead; -q
# names a command that prints that MTA's queue size, for step 5.
#
# -P ROUNDS compares hubd with Postfix: runs A B B A (A hubd, B a private
# Postfix relay started fresh for each run by ../shared/bench/postfix-relay.sh,
# or -R PATH, on 127.0.0.1:PF_PORT with PFDIR in the temporary directory),
# ROUNDS times, all to the same sink, and prints the median over neighbouring
# pairs of the ratios hubd/Postfix of both rates. Postfix needs root.
# `make bench-compare` (relaybench) measures more (CPU, latency, PSS) with a
# load generator and sink written in Go, which use more of the CPU the MTAs
# share with them: compare the two methods only through their ratios.
#
# Notes: by default smtp-source opens a new connection for every message
# (connect, EHLO, one transaction, QUIT); -d keeps the session open. hubd fsyncs
# every message before 250 (DESIGN.md invariant 1). Needs bash, go, smtp-source
# and smtp-sink (Debian: apt-get install postfix, choose "No configuration").
set -euo pipefail

MSGS=5000 SESSIONS=10 LEN=4096 PORT=2725 SINK_PORT=2726 PF_PORT=2727 TARGET="" QSIZE_CMD="" REUSE=""
ROUNDS="" PF_SCRIPT=""
LOG_LEVEL=${LOG_LEVEL:-info} # hubd logs each message at info, as Postfix does
usage() { sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//;p;}' "$0"; exit 2; }
while getopts "m:s:l:p:k:T:q:dP:R:h" opt; do
  case $opt in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) LEN=$OPTARG ;;
    p) PORT=$OPTARG ;; k) SINK_PORT=$OPTARG ;; T) TARGET=$OPTARG ;;
    q) QSIZE_CMD=$OPTARG ;; d) REUSE=-d ;; P) ROUNDS=$OPTARG ;; R) PF_SCRIPT=$OPTARG ;;
    *) usage ;;
  esac
done
for tool in smtp-source smtp-sink; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install postfix (\"No configuration\")" >&2; exit 1; }
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
PF_SCRIPT=${PF_SCRIPT:-$repo/../shared/bench/postfix-relay.sh}
if [ -n "$ROUNDS" ]; then
  [ -n "$TARGET" ] && { echo "-P and -T exclude each other" >&2; exit 2; }
  [ -f "$PF_SCRIPT" ] || { echo "-P needs postfix-relay.sh: not at $PF_SCRIPT (use -R)" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "-P starts a private Postfix: run as root" >&2; exit 1; }
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/hubd-bench.XXXXXX")
chmod 0755 "$work" # Postfix's processes (user postfix) reach their queue under it
hubd_pid="" sink_pid="" pf_up=""
pf() { PFDIR="$work/pf" LISTEN_PORT=$PF_PORT SINK_PORT=$SINK_PORT bash "$PF_SCRIPT" "$@"; }
stop_hubd() {
  if [ -n "$hubd_pid" ]; then kill -TERM "$hubd_pid" 2>/dev/null || true; wait "$hubd_pid" 2>/dev/null || true; fi
  hubd_pid=""
}
cleanup() {
  stop_hubd
  if [ -n "$pf_up" ]; then pf clean >/dev/null 2>&1 || true; fi
  if [ -n "$sink_pid" ]; then kill -TERM "$sink_pid" 2>/dev/null || true; wait "$sink_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# wait_port HOST PORT: poll until something accepts connections (max 10 s).
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $1:$2 after 10s" >&2; return 1
}

# start_hubd DIR: a fresh hubd with its spool in DIR (step 3); sets
# hubd_pid, TARGET and QSIZE_CMD.
start_hubd() {
  local dir=$1
  mkdir -p "$dir"
  local conns=$((SESSIONS * 2 > 100 ? SESSIONS * 2 : 100)) # closing sessions still count for a moment
  cat >"$dir/hubd.hcl" <<EOF
hub {
  hostname  = "bench.hubd.test"
  spool_dir = "spool"
}
receive_connector "relay" {
  bind             = ["127.0.0.1:$PORT"]
  remote_ip_ranges = ["127.0.0.1/32"]
  max_inbound_connections_per_source = $conns
  permissions {
    anonymous = ["submit", "relay"]
  }
}
send_connector "sink" {
  address_spaces = ["*"]
  smart_hosts    = ["127.0.0.1:$SINK_PORT"]
  tls            = "none"
}
EOF
  "$work/hubd" run -config "$dir/hubd.hcl" -log-level "$LOG_LEVEL" >"$dir/hubd.log" 2>&1 &
  hubd_pid=$!
  wait_port 127.0.0.1 "$PORT" || { cat "$dir/hubd.log" >&2; exit 1; }
  TARGET=127.0.0.1:$PORT
  # The messages in the queue, from hubd's admin API (the spool is a log:
  # its files say nothing about how many messages wait).
  QSIZE_CMD="'$work/hubctl' -socket '$dir/admin.sock' status | awk '/^queue:/ {print \$2}'"
}

# load: steps 4 and 5 against TARGET; prints "ACCEPT_RATE RELAY_RATE" (the
# relay rate is "-" when it was not measured) on stdout.
load() {
  local start accepted drained=""
  start=$(now)
  smtp-source $REUSE -c -l "$LEN" -m "$MSGS" -s "$SESSIONS" -f a@x.test -t b@remote.test "$TARGET" >"$work/source.log" 2>&1 ||
    { echo "smtp-source failed:" >&2; tail -5 "$work/source.log" >&2; exit 1; }
  accepted=$(now)
  if [ -n "$QSIZE_CMD" ]; then
    for _ in $(seq 3000); do
      if [ "$(bash -c "$QSIZE_CMD" 2>/dev/null || echo 1)" = 0 ]; then drained=$(now); break; fi
      sleep 0.1
    done
  fi
  awk -v n="$MSGS" -v s="$start" -v a="$accepted" -v d="$drained" 'BEGIN {
    printf "%.1f %s\n", n / (a - s), (d == "" ? "-" : sprintf("%.1f", n / (d - s)))
  }'
}

# 1. Build (not for -T).
if [ -z "$TARGET" ]; then
  (cd "$repo" && GOTOOLCHAIN=local go build -tags grpcnotrace -o "$work/hubd" ./cmd/hubd && # the Makefile's TAGS
    GOTOOLCHAIN=local go build -o "$work/hubctl" ./cmd/hubctl)
fi

# 2. The next hop. As root smtp-sink must drop privileges (-u).
sink_user=(); [ "$(id -u)" = 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" "127.0.0.1:$SINK_PORT" 1024 >"$work/sink.log" 2>&1 &
sink_pid=$!
wait_port 127.0.0.1 "$SINK_PORT"

echo "smtp-source ${REUSE:+$REUSE }-c -l $LEN -m $MSGS -s $SESSIONS -f a@x.test -t b@remote.test"
if [ -z "$ROUNDS" ]; then
  [ -z "$TARGET" ] && start_hubd "$work/run"
  out=$(load) && read -r acc rel <<<"$out"
  stop_hubd
  awk -v n="$MSGS" -v ss="$SESSIONS" -v a="$acc" -v r="$rel" 'BEGIN {
    printf "sessions=%d messages=%d accept: %.2fs %.0f msgs/s", ss, n, n / a, a
    if (r != "-") printf "  relay (queue empty): %.2fs %.0f msgs/s", n / r, r
    else printf "  relay: not measured"
    printf "\n"
  }'
  exit 0
fi

# -P: A B B A, ROUNDS times; runs 4k+1 and 4k+2 are a pair, 4k+3 and 4k+4 another.
printf '%-4s %-8s %12s %12s\n' run mta "accepted/s" "relay/s"
results=()
run=0
for ((r = 0; r < ROUNDS; r++)); do
  for mta in hubd postfix postfix hubd; do
    run=$((run + 1))
    if [ "$mta" = hubd ]; then
      start_hubd "$work/run$run"
      out=$(load) && read -r acc rel <<<"$out"
      stop_hubd
      rm -rf "$work/run$run/spool"
    else
      pf clean >/dev/null 2>&1 || true
      pf_up=1
      pf start >"$work/pf-start.log" 2>&1 || { cat "$work/pf-start.log" >&2; exit 1; }
      TARGET=127.0.0.1:$PF_PORT
      QSIZE_CMD="PFDIR='$work/pf' bash '$PF_SCRIPT' qsize"
      out=$(load) && read -r acc rel <<<"$out"
      pf clean >/dev/null 2>&1 || true
      pf_up=""
    fi
    printf '%-4s %-8s %12s %12s\n' "$run" "$mta" "$acc" "$rel"
    results+=("$mta $acc $rel")
  done
done
printf '%s\n' "${results[@]}" | awk '
  { mta[NR] = $1; acc[NR] = $2; rel[NR] = $3 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    n = 0
    for (i = 1; i + 1 <= NR; i += 2) { # the neighbouring pairs: (A,B) then (B,A)
      h = (mta[i] == "hubd") ? i : i + 1; p = (h == i) ? i + 1 : i
      n++; ra[n] = acc[h] / acc[p]
      if (rel[h] != "-" && rel[p] != "-") { m++; rr[m] = rel[h] / rel[p] }
    }
    printf "median ratio hubd/postfix over %d pairs: accepted %.2fx", n, median(ra, n)
    if (m > 0) printf ", relay (queue empty) %.2fx", median(rr, m)
    printf "\n"
  }'
