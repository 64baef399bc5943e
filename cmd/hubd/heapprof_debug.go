//go:build hubdheapprof

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// A build for looking at the heap and the goroutines (go build -tags
// hubdheapprof): on SIGUSR1 hubd writes a heap profile to
// $HUBD_HEAPPROF/heap-N.pb.gz; on SIGUSR2 it writes its goroutines, grouped
// by stack, to $HUBD_GOROUTINES/goroutines-N.txt (without the heap
// profiling's cost).
func init() {
	if dir := os.Getenv("HUBD_HEAPPROF"); dir != "" {
		runtime.MemProfileRate = 1024
		onSignal(syscall.SIGUSR1, dir+"/heap-%d.pb.gz", func(f *os.File) {
			pprof.Lookup("heap").WriteTo(f, 0)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(os.Stderr, "memstats: HeapAlloc %d HeapInuse %d HeapIdle %d HeapReleased %d HeapSys %d NextGC %d StackInuse %d MSpanInuse %d MCacheInuse %d GCSys %d OtherSys %d BuckHashSys %d Sys %d NumGC %d\n",
				ms.HeapAlloc>>10, ms.HeapInuse>>10, ms.HeapIdle>>10, ms.HeapReleased>>10, ms.HeapSys>>10, ms.NextGC>>10, ms.StackInuse>>10, ms.MSpanInuse>>10, ms.MCacheInuse>>10, ms.GCSys>>10, ms.OtherSys>>10, ms.BuckHashSys>>10, ms.Sys>>10, ms.NumGC)
		})
	}
	if dir := os.Getenv("HUBD_GOROUTINES"); dir != "" {
		onSignal(syscall.SIGUSR2, dir+"/goroutines-%d.txt", func(f *os.File) {
			pprof.Lookup("goroutine").WriteTo(f, 1)
		})
	}
}

// onSignal calls write with a new file named by pattern (its %d counting
// from 1) each time sig arrives.
func onSignal(sig os.Signal, pattern string, write func(*os.File)) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, sig)
	go func() {
		for n := 1; ; n++ {
			<-c
			f, err := os.Create(fmt.Sprintf(pattern, n))
			if err != nil {
				continue
			}
			write(f)
			f.Close()
		}
	}()
}
