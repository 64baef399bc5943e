#!/usr/bin/env bash
# Relay throughput of hubd (or of any MTA already listening) under Postfix's
# smtp-source load generator, with Postfix's smtp-sink as the next hop.
#
#   examples/bench/smtp-source.sh                     # 5000 msgs, 10 sessions, through a fresh hubd
#   examples/bench/smtp-source.sh -m 20000 -s 50      # more messages, more sessions
#   examples/bench/smtp-source.sh -d                  # reuse each session for many messages (RSET)
#   examples/bench/smtp-source.sh -T 127.0.0.1:2525 -k 2526 -q 'postfix-relay.sh qsize'
#                                                     # load another MTA (e.g. a Postfix relay
#                                                     # that relays to the sink on port 2526)
#
# What it does, in order:
#   1. builds hubd (go build ./cmd/hubd) into a temporary directory;
#   2. starts `smtp-sink` on 127.0.0.1:SINK_PORT (it accepts and discards mail);
#   3. writes a hubd config: one receive connector on 127.0.0.1:PORT that lets
#      127.0.0.1/32 (and nobody else) relay anonymously, and one send connector
#      that relays everything to the sink with tls = "none"; starts hubd on it;
#   4. runs `smtp-source -c -l LEN -m N -s S -f a@x.test -t b@remote.test
#      127.0.0.1:PORT` and times it: smtp-source ends when the last message got
#      its 250 after DATA, so N / time is the *acceptance* rate (msgs/s);
#   5. waits until the queue is empty again (bounded) and reports the
#      *relay* rate: N / time from the first message to an empty queue;
#   6. stops hubd (SIGTERM) and the sink, removes the temporary directory.
# With -T, steps 1 and 3 are skipped and the load goes to TARGET instead; -q
# names a command that prints that MTA's queue size, for step 5.
#
# Notes: by default smtp-source opens a new connection for every message
# (connect, EHLO, one transaction, QUIT); -d keeps the session open. hubd fsyncs
# every message before 250 (DESIGN.md invariant 1), so on most machines the
# disk's fsync rate is the limit, not the CPU. Needs bash, go, smtp-source and
# smtp-sink (Debian: apt-get install postfix, choose "No configuration").
set -euo pipefail

MSGS=5000 SESSIONS=10 LEN=4096 PORT=2725 SINK_PORT=2726 TARGET="" QSIZE_CMD="" REUSE=""
LOG_LEVEL=${LOG_LEVEL:-info} # hubd logs each message at info, as Postfix does
usage() { sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//;p;}' "$0"; exit 2; }
while getopts "m:s:l:p:k:T:q:dh" opt; do
  case $opt in
    m) MSGS=$OPTARG ;; s) SESSIONS=$OPTARG ;; l) LEN=$OPTARG ;;
    p) PORT=$OPTARG ;; k) SINK_PORT=$OPTARG ;; T) TARGET=$OPTARG ;;
    q) QSIZE_CMD=$OPTARG ;; d) REUSE=-d ;; *) usage ;;
  esac
done
for tool in smtp-source smtp-sink; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install postfix (\"No configuration\")" >&2; exit 1; }
done

repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/hubd-bench.XXXXXX")
hubd_pid="" sink_pid=""
cleanup() {
  if [ -n "$hubd_pid" ]; then kill -TERM "$hubd_pid" 2>/dev/null || true; wait "$hubd_pid" 2>/dev/null || true; fi
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

# 2. The next hop. As root smtp-sink must drop privileges (-u).
sink_user=(); [ "$(id -u)" = 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" "127.0.0.1:$SINK_PORT" 1024 >"$work/sink.log" 2>&1 &
sink_pid=$!
wait_port 127.0.0.1 "$SINK_PORT"

if [ -z "$TARGET" ]; then
  # 1 and 3. Build and start hubd.
  (cd "$repo" && GOTOOLCHAIN=local go build -tags grpcnotrace -o "$work/hubd" ./cmd/hubd) # the Makefile's TAGS
  conns=$((SESSIONS * 2 > 100 ? SESSIONS * 2 : 100)) # closing sessions still count for a moment
  cat >"$work/hubd.hcl" <<EOF
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
  "$work/hubd" run -config "$work/hubd.hcl" -log-level "$LOG_LEVEL" >"$work/hubd.log" 2>&1 &
  hubd_pid=$!
  wait_port 127.0.0.1 "$PORT" || { cat "$work/hubd.log" >&2; exit 1; }
  TARGET=127.0.0.1:$PORT
  QSIZE_CMD="find '$work/spool/queue' -name '*.msg' | wc -l"
fi

# 4. The load. Acceptance time ends when smtp-source has its last 250.
echo "smtp-source ${REUSE:+$REUSE }-c -l $LEN -m $MSGS -s $SESSIONS -f a@x.test -t b@remote.test $TARGET"
start=$(now)
smtp-source $REUSE -c -l "$LEN" -m "$MSGS" -s "$SESSIONS" -f a@x.test -t b@remote.test "$TARGET" >"$work/source.log" 2>&1 ||
  { echo "smtp-source failed:" >&2; tail -5 "$work/source.log" >&2; exit 1; }
accepted=$(now)

# 5. Relay: until the queue is empty (at most 5 minutes).
drained=""
if [ -n "$QSIZE_CMD" ]; then
  for _ in $(seq 3000); do
    if [ "$(bash -c "$QSIZE_CMD" 2>/dev/null || echo 1)" -eq 0 ]; then drained=$(now); break; fi
    sleep 0.1
  done
fi

awk -v n="$MSGS" -v s="$start" -v a="$accepted" -v d="$drained" -v ss="$SESSIONS" 'BEGIN {
  printf "sessions=%d messages=%d accept: %.2fs %.0f msgs/s", ss, n, a - s, n / (a - s)
  if (d != "") printf "  relay (queue empty): %.2fs %.0f msgs/s", d - s, n / (d - s)
  else printf "  relay: not measured"
  printf "\n"
}'
