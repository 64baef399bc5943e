#!/bin/sh
# Reproduces the figures in docs/queue.md. This machine's speed drifts
# (±40 %), so engines run interleaved A B C D D C B A, ROUNDS times per
# writer count, and only medians are reported (go run . -summarize).
# Output: results.txt (one line per run), fsyncs.txt (strace counts).
set -eu
ROUNDS=${ROUNDS:-2}
ENGINES=${ENGINES:-"disk segment pebble bbolt"}
REVERSED=$(for e in $ENGINES; do echo $e; done | tac | tr '\n' ' ')
export GOTOOLCHAIN=local
go build -o ./queueengines .
: > results.txt
for w in 1 8 64; do
	n=5000
	[ "$w" = 1 ] && n=${N1:-1000} # W=1 is fsync-latency bound; fewer messages, same rates
	for r in $(seq "$ROUNDS"); do
		for e in $ENGINES $REVERSED; do
			./queueengines -engine "$e" -w "$w" -n "$n" | tee -a results.txt
		done
	done
done
for r in $(seq "$ROUNDS"); do
	for e in $ENGINES $REVERSED; do
		./queueengines -engine "$e" -w 64 -n 0 -retry 20000 -size 5000 | tee -a results.txt
	done
done
# fsync counts for engines that cannot count their own (one run each,
# under strace, which slows them: counts only, not rates).
: > fsyncs.txt
if command -v strace >/dev/null; then
	for w in 1 8 64; do
		n=5000
		[ "$w" = 1 ] && n=${N1:-1000}
		for e in $ENGINES; do
			strace -f -c -o strace.out -e trace=fsync,fdatasync ./queueengines -engine "$e" -w "$w" -n "$n" >/dev/null
			echo "engine=$e w=$w n=$n $(awk '$NF=="fsync"||$NF=="fdatasync"{printf "%s=%s ", $NF, $4}' strace.out)" | tee -a fsyncs.txt
		done
	done
	for e in $ENGINES; do
		strace -f -c -o strace.out -e trace=fsync,fdatasync ./queueengines -engine "$e" -w 64 -n 0 -retry 20000 >/dev/null
		echo "retry engine=$e $(awk '$NF=="fsync"||$NF=="fdatasync"{printf "%s=%s ", $NF, $4}' strace.out)" | tee -a fsyncs.txt
	done
	rm -f strace.out
fi
./queueengines -summarize results.txt
