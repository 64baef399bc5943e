package maildrop

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// watchRenames calls poke whenever a file is renamed into dir (IN_MOVED_TO:
// sendmail's final rename) until the returned Closer is closed.
func watchRenames(dir string, poke func()) (io.Closer, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// Non-blocking, so the runtime poller serves Read and Close ends it.
	f := os.NewFile(uintptr(fd), "inotify:"+dir)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			poke()
		}
	}()
	return f, nil
}
