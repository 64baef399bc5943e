package tracking

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Filter selects events in Search. Zero fields match everything; set fields
// must all match.
type Filter struct {
	QueueID string
	// MessageID matches with or without the angle brackets.
	MessageID string
	// Sender matches the reverse-path, ignoring case. The null sender
	// cannot be searched for (it is not in the line).
	Sender string
	// Recipient matches Recipient or RelatedRecipient, ignoring case, so
	// that searching for a list or an alias also finds what it became.
	Recipient string
	Event     EventID
	Since     time.Time // inclusive; zero: no lower bound
	Until     time.Time // exclusive; zero: no upper bound
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Event) bool {
	switch {
	case f.QueueID != "" && e.QueueID != f.QueueID,
		f.Event != "" && e.Event != f.Event,
		f.MessageID != "" && trimBrackets(e.MessageID) != trimBrackets(f.MessageID),
		f.Sender != "" && !strings.EqualFold(e.Sender, f.Sender),
		f.Recipient != "" && !strings.EqualFold(e.Recipient, f.Recipient) &&
			!strings.EqualFold(e.RelatedRecipient, f.Recipient),
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	return true
}

func trimBrackets(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return s[1 : len(s)-1]
	}
	return s
}

// searchSlack is how far an event's Time may lie outside the day in its
// file's name: events are written moments after they happen, and at
// midnight a line can land in the next day's file.
const searchSlack = time.Hour

// Search calls fn with every event in dir that matches f, in the order they
// were written: files oldest first, lines in file order. It stops when fn
// returns false. Lines that do not parse (a line torn by a crash or a full
// disk) are skipped. Files outside the time range, by the day in their name,
// are not read. Search may run while a Log writes to dir: it sees the lines
// written before it reached them, and a file deleted meanwhile is skipped.
func Search(dir string, f Filter, fn func(Event) bool) error {
	files, err := listFiles(dir)
	if err != nil {
		return fmt.Errorf("tracking: %w", err)
	}
	for _, fi := range files {
		if !f.Since.IsZero() && !fi.day.Add(24*time.Hour+searchSlack).After(f.Since) {
			continue
		}
		if !f.Until.IsZero() && !fi.day.Add(-searchSlack).Before(f.Until) {
			continue
		}
		more, err := searchFile(filepath.Join(dir, fi.String()), f, fn)
		if err != nil {
			return fmt.Errorf("tracking: %w", err)
		}
		if !more {
			return nil
		}
	}
	return nil
}

// searchFile reports whether the search should go on.
func searchFile(path string, f Filter, fn func(Event) bool) (bool, error) {
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // deleted by rotation since it was listed
	}
	if err != nil {
		return false, err
	}
	defer file.Close()
	r := bufio.NewReaderSize(file, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			var e Event
			if json.Unmarshal(line, &e) == nil && f.Match(e) && !fn(e) {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// Dir is the directory the log writes to, for Search; "" for a nil Log
// (tracking off).
func (l *Log) Dir() string {
	if l == nil {
		return ""
	}
	return l.dir
}
