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
	initGoroutineDump()
	dir := os.Getenv("HUBD_HEAPPROF")
	if dir == "" {
		return
	}
	runtime.MemProfileRate = 1024
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR1)
	go func() {
		for n := 1; ; n++ {
			<-c
			f, err := os.Create(fmt.Sprintf("%s/heap-%d.pb.gz", dir, n))
			if err != nil {
				continue
			}
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			fmt.Fprintf(os.Stderr, "memstats: HeapAlloc %d HeapInuse %d HeapIdle %d HeapReleased %d HeapSys %d NextGC %d StackInuse %d MSpanInuse %d MCacheInuse %d GCSys %d OtherSys %d BuckHashSys %d Sys %d NumGC %d\n",
				ms.HeapAlloc>>10, ms.HeapInuse>>10, ms.HeapIdle>>10, ms.HeapReleased>>10, ms.HeapSys>>10, ms.NextGC>>10, ms.StackInuse>>10, ms.MSpanInuse>>10, ms.MCacheInuse>>10, ms.GCSys>>10, ms.OtherSys>>10, ms.BuckHashSys>>10, ms.Sys>>10, ms.NumGC)
		}
	}()
}

func initGoroutineDump() {
	dir := os.Getenv("HUBD_GOROUTINES")
	if dir == "" {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	go func() {
		for n := 1; ; n++ {
			<-c
			f, err := os.Create(fmt.Sprintf("%s/goroutines-%d.txt", dir, n))
			if err != nil {
				continue
			}
			pprof.Lookup("goroutine").WriteTo(f, 1)
			f.Close()
		}
	}()
}
