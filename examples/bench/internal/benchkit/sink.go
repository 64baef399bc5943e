package benchkit

import (
	"bufio"
	"bytes"
	"net"
	"strings"
)

// ServeSMTP answers SMTP clients on ln until ln is closed: the next hop of
// the benchmarks, a minimal server (RFC 5321) that accepts every
// transaction. It offers no extension beyond 8BITMIME, so no client
// pipelines to it and every MTA measured sees the same server. Every reply
// carries an RFC 3463 enhanced code. conn (may be nil) is called for each
// connection accepted; deliver for each message, with its recipients and
// its Message-ID header's value ("" if none), before the 250.
func ServeSMTP(ln net.Listener, host string, conn func(), deliver func(rcpts []string, messageID string)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if conn != nil {
			conn()
		}
		go session(c, host, deliver)
	}
}

// session answers one SMTP client until QUIT or EOF.
func session(c net.Conn, host string, deliver func(rcpts []string, messageID string)) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriter(c)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		return w.Flush() == nil
	}
	if !reply("220 " + host + " ESMTP benchmark sink") {
		return
	}
	var rcpts []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimSpace(line)
		verb := strings.ToUpper(cmd)
		if i := strings.IndexAny(verb, " :"); i >= 0 {
			verb = verb[:i]
		}
		var ok bool
		switch verb {
		case "EHLO":
			ok = reply("250-" + host + "\r\n250 8BITMIME")
		case "HELO":
			ok = reply("250 " + host)
		case "MAIL":
			rcpts = rcpts[:0]
			ok = reply("250 2.1.0 OK")
		case "RCPT":
			rcpts = append(rcpts, pathOf(cmd))
			ok = reply("250 2.1.5 OK")
		case "RSET":
			rcpts = rcpts[:0]
			ok = reply("250 2.0.0 OK")
		case "NOOP":
			ok = reply("250 2.0.0 OK")
		case "DATA":
			if !reply("354 End data with <CR><LF>.<CR><LF>") {
				return
			}
			id, err := ReadMessage(r)
			if err != nil {
				return
			}
			deliver(rcpts, id)
			rcpts = rcpts[:0]
			ok = reply("250 2.0.0 Ok: queued")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			ok = reply("502 5.5.2 Command not recognized")
		}
		if !ok {
			return
		}
	}
}

// pathOf is the address in "RCPT TO:<a> params".
func pathOf(cmd string) string {
	i, j := strings.IndexByte(cmd, '<'), strings.IndexByte(cmd, '>')
	if i < 0 || j < i {
		return ""
	}
	return cmd[i+1 : j]
}

// ReadMessage reads a DATA body up to the lone "." line (RFC 5321
// §4.1.1.4) and returns its Message-ID header's value ("" if it has none).
// ReadSlice keeps a million messages from allocating per line.
func ReadMessage(r *bufio.Reader) (string, error) {
	id, inHeader := "", true
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			inHeader = inHeader && len(line) == 0 // a 64 KiB line: no header of ours
			continue
		}
		if err != nil {
			return "", err
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 1 && trimmed[0] == '.' {
			return id, nil
		}
		if !inHeader {
			continue
		}
		if len(trimmed) == 0 {
			inHeader = false
			continue
		}
		if len(trimmed) > 11 && strings.EqualFold(string(trimmed[:11]), "message-id:") {
			id = strings.TrimSpace(string(trimmed[11:]))
		}
	}
}
