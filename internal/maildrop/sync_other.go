//go:build !linux

package maildrop

import "os"

// syncDir makes a rename in dir durable by fsyncing the directory (without
// syncfs(2) outside Linux, the directory must be readable by the writer).
func syncDir(dir string, _ *os.File) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
