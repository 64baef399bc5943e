package tracking

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// File names: MSGTRKyyyymmdd-n.jsonl (see the package comment).
const (
	namePrefix = "MSGTRK"
	nameSuffix = ".jsonl"
	dayLayout  = "20060102"
)

// fileName identifies one tracking file: the UTC day it was started and its
// sequence number within that day. The zero value precedes every file.
type fileName struct {
	day time.Time // UTC midnight
	seq int
}

func (n fileName) String() string {
	return namePrefix + n.day.Format(dayLayout) + "-" + strconv.Itoa(n.seq) + nameSuffix
}

// before orders files oldest first.
func (n fileName) before(m fileName) bool {
	if !n.day.Equal(m.day) {
		return n.day.Before(m.day)
	}
	return n.seq < m.seq
}

func (n fileName) isZero() bool { return n.day.IsZero() }

// is reports whether n and m name the same file (time.Time must not be
// compared with ==).
func (n fileName) is(m fileName) bool { return n.day.Equal(m.day) && n.seq == m.seq }

// parseName parses a tracking file name; ok is false for any other file.
func parseName(s string) (n fileName, ok bool) {
	rest, ok := strings.CutPrefix(s, namePrefix)
	if !ok {
		return n, false
	}
	rest, ok = strings.CutSuffix(rest, nameSuffix)
	if !ok {
		return n, false
	}
	day, seq, ok := strings.Cut(rest, "-")
	if !ok || len(day) != len(dayLayout) {
		return n, false
	}
	d, err := time.Parse(dayLayout, day)
	if err != nil {
		return n, false
	}
	i, err := strconv.Atoi(seq)
	if err != nil || i < 1 || strconv.Itoa(i) != seq {
		return n, false
	}
	return fileName{day: d, seq: i}, true
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// fileInfo is a tracking file found in the directory.
type fileInfo struct {
	fileName
	size    int64
	modTime time.Time
}

// lastEvent bounds the time of the newest event in the file: a file never
// spans a UTC midnight, and the file was last written at its modification
// time. Taking the earlier of the two keeps a copied file (new mtime) from
// living forever and a file that stopped early (old mtime) from living on
// until its day ends.
func (fi fileInfo) lastEvent() time.Time {
	end := fi.day.Add(24 * time.Hour)
	if fi.modTime.Before(end) {
		return fi.modTime
	}
	return end
}

// listFiles returns the tracking files in dir, oldest first. Files that
// vanish while being listed (a concurrent deletion) are left out.
func listFiles(dir string) ([]fileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []fileInfo
	for _, e := range entries {
		n, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files = append(files, fileInfo{fileName: n, size: info.Size(), modTime: info.ModTime()})
	}
	slices.SortFunc(files, func(a, b fileInfo) int {
		switch {
		case a.before(b.fileName):
			return -1
		case b.before(a.fileName):
			return 1
		}
		return 0
	})
	return files, nil
}

// createNext creates the file that follows prev at time now: today's day
// (or prev's, should the clock have gone back, so that the current file is
// always the newest) and the next free sequence number of that day.
func createNext(dir string, prev fileName, now time.Time) (*os.File, fileName, error) {
	next := fileName{day: utcDay(now), seq: 1}
	if !prev.isZero() && !prev.day.Before(next.day) {
		next = fileName{day: prev.day, seq: prev.seq + 1}
	}
	// O_EXCL: never append to a file someone else (another hubd pointed at
	// the same directory, a restored backup) is writing; take the next
	// number instead.
	for range 1000 {
		f, err := os.OpenFile(filepath.Join(dir, next.String()), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		if err == nil {
			return f, next, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, next, err
		}
		next.seq++
	}
	return nil, next, fmt.Errorf("no free file name in %s after %s", dir, next)
}

// cleanupLocked deletes files older than maxAge, then the oldest files
// while the total exceeds maxDir. The current file is never deleted.
func (l *Log) cleanupLocked(now time.Time) {
	files, err := listFiles(l.dir)
	if err != nil {
		l.reportLocked(now, "cannot list the directory", err)
		return
	}
	var kept []fileInfo
	for _, fi := range files {
		if !fi.is(l.cur) && l.maxAge > 0 && now.Sub(fi.lastEvent()) > l.maxAge {
			if l.remove(now, fi, "older than max age") {
				continue
			}
		}
		kept = append(kept, fi)
	}
	if l.maxDir <= 0 {
		return
	}
	var total int64
	for _, fi := range kept {
		total += fi.size
	}
	for _, fi := range kept { // oldest first
		if total <= l.maxDir {
			break
		}
		if !fi.is(l.cur) && l.remove(now, fi, "directory over max size") {
			total -= fi.size
		}
	}
}

// remove deletes one file and reports whether it is gone.
func (l *Log) remove(now time.Time, fi fileInfo, why string) bool {
	err := os.Remove(filepath.Join(l.dir, fi.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		l.reportLocked(now, "cannot delete "+fi.String(), err)
		return false
	}
	l.log.Debug("tracking log: deleted", "file", fi.String(), "why", why, "size", fi.size)
	return true
}
