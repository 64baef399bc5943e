package main

import (
	"math"
	"sort"
	"time"
)

// median returns the median of xs (the mean of the two middle values for an
// even count), ignoring NaN entries; NaN when nothing is left.
func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	sort.Float64s(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of ds:
// the smallest value with at least p % of the values at or below it. Zero for
// an empty slice. ds is sorted in place.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(ds) {
		rank = len(ds)
	}
	return ds[rank-1]
}

// ratio is a/b, NaN when either is missing (NaN) or b is zero.
func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

// pairRatios turns the run sequence A B B A A B B A … into the ratios of
// neighbouring runs, hubd/Postfix: (A1/B1), (A2/B2), … — each ratio compares
// two runs taken a few seconds apart, so the machine's slow drift cancels.
// hubd and postfix hold one metric for each MTA's runs in the order they ran;
// the i-th hubd run is paired with the i-th Postfix run, which in the A B B A
// order is always its neighbour.
func pairRatios(hubd, postfix []float64) []float64 {
	n := min(len(hubd), len(postfix))
	out := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, ratio(hubd[i], postfix[i]))
	}
	return out
}
