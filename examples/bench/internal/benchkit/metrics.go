package benchkit

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics are the samples of one Prometheus text exposition: each series
// under its name with labels as exposed (`name{a="x"}`), and under its bare
// name the sum over its labels.
type Metrics map[string]float64

// Get returns the bare name's value (the sum over its labels), NaN when
// the exposition has no such metric.
func (m Metrics) Get(name string) float64 {
	if v, ok := m[name]; ok {
		return v
	}
	return math.NaN()
}

// ByLabel returns the series of name by the value of one label.
func (m Metrics) ByLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{"
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		i := strings.Index(k, label+`="`)
		if i < 0 {
			continue
		}
		val := k[i+len(label)+2:]
		if j := strings.IndexByte(val, '"'); j >= 0 {
			out[val[:j]] += v
		}
	}
	return out
}

// Scrape GETs url (a /metrics endpoint) within timeout and parses it. The
// clients share http.DefaultTransport, so scrapes reuse their connections.
func Scrape(url string, timeout time.Duration) (Metrics, error) {
	resp, err := (&http.Client{Timeout: timeout}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return ParseExposition(resp.Body)
}

// ParseExposition reads the Prometheus text format: "name{labels} value
// [timestamp]" lines, comments skipped. Label values cannot hold a "}" in
// what hubd exports, so the name ends at the first '{' or blank.
func ParseExposition(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, series, rest := line, "", ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			series, rest = name+rest[:end+1], rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[name] += v
		if series != "" {
			m[series] += v
		}
	}
	return m, sc.Err()
}
