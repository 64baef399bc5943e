//go:build !linux

package maildrop

import (
	"errors"
	"io"
)

func watchRenames(string, func()) (io.Closer, error) {
	return nil, errors.New("inotify is Linux only")
}
