package maildrop

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// syncDir makes a rename in dir durable. The owner (hubd, or root) fsyncs the
// directory; a setgid sendmail cannot open the directory (mode 1730 grants
// the group no read), so it syncs the whole filesystem through f instead.
func syncDir(dir string, f *os.File) error {
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
		return err
	}
	if !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return unix.Syncfs(int(f.Fd()))
}
