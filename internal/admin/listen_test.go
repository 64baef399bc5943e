package admin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSocketStaleAndLive: a socket file nobody answers on is replaced; a
// live one is an error naming it; TCP without a token never starts.
func TestSocketStaleAndLive(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // the file stays, as after a kill -9
	s := New(Options{})
	if err := s.Listen(ListenConfig{Socket: sock, SocketGID: -1}); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer s.Shutdown(context.Background())
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	err = New(Options{}).Listen(ListenConfig{Socket: sock, SocketGID: -1})
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), sock) {
		t.Errorf("second server on a live socket: %v", err)
	}
	if err := New(Options{}).Listen(ListenConfig{TCP: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("TCP without a token: %v", err)
	}
	notSock := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notSock, nil, 0o600)
	if err := New(Options{}).Listen(ListenConfig{Socket: notSock, SocketGID: -1}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
}
