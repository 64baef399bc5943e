package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// summarizeFile reads result lines (key=value ...) and prints, per
// engine and w (or waiting, for -retry lines), the median of every
// numeric figure and the number of runs.
func summarizeFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	type group struct {
		keys []string
		vals map[string][]float64
		runs int
	}
	groups := map[string]*group{}
	var order []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "engine=") {
			continue
		}
		kv := map[string]string{}
		var keys []string
		for _, fl := range fields {
			k, v, _ := strings.Cut(fl, "=")
			kv[k] = v
			keys = append(keys, k)
		}
		name := kv["engine"] + " w=" + kv["w"]
		if kv["waiting"] != "" {
			name = "retry " + name + " waiting=" + kv["waiting"]
		}
		g := groups[name]
		if g == nil {
			g = &group{keys: keys, vals: map[string][]float64{}}
			groups[name] = g
			order = append(order, name)
		}
		g.runs++
		for k, v := range kv {
			if x, err := strconv.ParseFloat(v, 64); err == nil {
				g.vals[k] = append(g.vals[k], x)
			}
		}
	}
	sort.Strings(order)
	for _, name := range order {
		g := groups[name]
		var b strings.Builder
		fmt.Fprintf(&b, "%-40s runs=%d", name, g.runs)
		for _, k := range g.keys {
			if k == "engine" || k == "w" || k == "waiting" || k == "n" || k == "size" {
				continue
			}
			fmt.Fprintf(&b, " %s=%s", k, strconv.FormatFloat(median(g.vals[k]), 'f', -1, 64))
		}
		fmt.Println(b.String())
	}
	return sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
