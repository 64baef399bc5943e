package delivery

import (
	"io"
	"net"
	"time"
)

// DeadlineWriter writes to W, setting Conn's write deadline Timeout ahead
// before each write. go-smtp's client (and the LMTP client) set deadlines
// only around commands and clear them after DATA's 354, so without it a
// next hop that stops reading would hold a body, and its delivery, forever.
type DeadlineWriter struct {
	W       io.Writer // Conn itself, or a writer over it
	Conn    net.Conn
	Timeout time.Duration
}

func (d *DeadlineWriter) Write(p []byte) (int, error) {
	if err := d.Conn.SetWriteDeadline(time.Now().Add(d.Timeout)); err != nil {
		return 0, err
	}
	return d.W.Write(p)
}
