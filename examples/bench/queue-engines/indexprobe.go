package main

import (
	"fmt"
	"runtime"
)

// indexEntry approximates the planned in-RAM index entry of a queued
// message: its 'M' record's location, next attempt, interned next hop,
// lease revision and status bits.
type indexEntry struct {
	seg, off, len uint32
	hop           uint32
	next          int64 // next attempt, Unix ns
	rev           uint32
	flags         uint16
}

type dueItem struct {
	at int64
	id uint64
}

// indexProbe measures the heap cost per message of the index (a map by
// id) plus a time-ordered due list (a heap's backing array), at n messages.
func indexProbe(n int) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	idx := make(map[uint64]indexEntry)
	due := make([]dueItem, 0)
	for i := range uint64(n) {
		idx[i] = indexEntry{seg: 1, off: uint32(i), len: 5300, hop: uint32(i % 100), next: int64(i)}
		due = append(due, dueItem{int64(i), i})
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	fmt.Printf("index_probe messages=%d heap_bytes_per_msg=%.0f\n", n, float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n))
	runtime.KeepAlive(idx)
	runtime.KeepAlive(due)
}
