package admin

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Listeners. The API is served on a Unix socket, whose file permissions
// are its access control (mode 0660 and a group by default, as Postfix's
// public/ sockets and Dovecot's auth sockets are), and optionally on TCP,
// where every request must carry the bearer token (RFC 6750 §2.1) read
// from a file: without a token the TCP listener refuses to start, because
// a TCP port has no permissions of its own.

// ListenConfig says where to serve.
type ListenConfig struct {
	Socket     string      // Unix socket path; "" for none
	SocketMode os.FileMode // 0: 0660
	SocketGID  int         // group of the socket; -1 keeps the process's
	TCP        string      // "host:port"; "" for none
	Token      string      // required with TCP
}

// Listen opens the listeners of c and serves them until Shutdown. A stale
// socket file left by a hubd that died is replaced; a socket some process
// still answers on is an error (two hubds must not share one spool's
// admin socket).
func (s *Server) Listen(c ListenConfig) error {
	if c.TCP != "" && strings.TrimSpace(c.Token) == "" {
		return errors.New("admin: refusing to listen on TCP " + c.TCP + " without a bearer token (token_file)")
	}
	var unixLn net.Listener
	if c.Socket != "" {
		ln, err := listenUnix(c.Socket, c.SocketMode, c.SocketGID)
		if err != nil {
			return err
		}
		unixLn, s.socket = ln, c.Socket
	}
	if c.TCP != "" {
		ln, err := net.Listen("tcp", c.TCP)
		if err != nil {
			if unixLn != nil {
				unixLn.Close()
				os.Remove(c.Socket)
			}
			return fmt.Errorf("admin: %w", err)
		}
		s.tcpLn = ln
		s.tcp = &http.Server{Handler: bearer(strings.TrimSpace(c.Token), s.Handler()), ReadHeaderTimeout: 10 * time.Second}
		go s.tcp.Serve(ln)
	}
	if unixLn != nil {
		go s.Serve(unixLn)
	}
	return nil
}

// SocketPath is the Unix socket's path, "" when none.
func (s *Server) SocketPath() string { return s.socket }

// TCPAddr is the TCP listener's address, nil when none.
func (s *Server) TCPAddr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// listenUnix creates the socket under a temporary name, sets its mode and
// group, and only then renames it into place, so that it is never
// reachable with the wrong permissions.
func listenUnix(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if mode == 0 {
		mode = 0o660
	}
	if err := replaceStale(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	ln.SetUnlinkOnClose(false) // the file is renamed; Shutdown removes it by its final name
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("admin: socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return ln, nil
}

// replaceStale removes a socket file nobody answers on; a live one, or a
// file that is not a socket, is an error.
func replaceStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("admin: %s exists and is not a socket; not replacing it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin: socket %s is in use: another hubd is running on it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("admin: removing stale socket: %w", err)
	}
	return nil
}

// bearer admits requests carrying "Authorization: Bearer <token>",
// compared in constant time; others get 401 (RFC 6750 §3).
func bearer(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hubd"`)
			writeJSON(w, http.StatusUnauthorized, Error{Error: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}
