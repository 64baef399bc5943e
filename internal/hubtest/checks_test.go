package hubtest

import (
	"errors"
	"fmt"
	"net/smtp"
	"net/textproto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/hub/tracking"
	"hubd/internal/dnstest"
)

// checksHub is an internet-facing hub: its connector's usage turns the
// receipt checks on, and the name servers are given in HCL ({{dns}}).
const checksHub = `
hub {
  hostname  = "mx.example.test"
  spool_dir = "{{dir}}/spool"
  {{dns}}
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "{{dir}}/mail/bob" }
receive_connector "internet" {
  bind  = ["127.0.0.1:0"]
  usage = "internet"
  checks { dmarc_reject = true }
}
`

// TestReceiptChecksEndToEnd: a running hub asks the DNS server of
// hub.dns_servers for SPF and DMARC, stores one Authentication-Results
// field above the message (a forged one with its authserv-id stripped),
// records the results in the tracking log, and refuses a From: whose
// domain publishes p=reject and is not authenticated, with 550 5.7.1 and
// nothing queued.
func TestReceiptChecksEndToEnd(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetTXT("sender.test", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("_dmarc.sender.test", "v=DMARC1; p=reject")
	dns.SetTXT("bank.test", "v=spf1 ip4:192.0.2.1 -all")
	dns.SetTXT("_dmarc.bank.test", "v=DMARC1; p=reject")
	h := Start(t, checksHub, Options{DNSServers: []string{dns.Addr}})
	addr := h.Addr(t, "internet")

	msg := "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=forged@bank.test\r\n" +
		"From: <a@sender.test>\r\nTo: <bob@example.test>\r\nSubject: checked\r\n\r\nhello\r\n"
	if err := smtp.SendMail(addr, nil, "a@sender.test", []string{"bob@example.test"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := WaitMaildir(t, filepath.Join(h.Dir, "mail", "bob"), 1, 10*time.Second)[0]
	want := "Authentication-Results: mx.example.test;\n\tspf=pass smtp.mailfrom=a@sender.test;\n\tdkim=none;\n\tdmarc=pass (p=reject) header.from=sender.test\n"
	if !strings.Contains(got, want) {
		t.Errorf("delivered message lacks\n%q:\n%s", want, got)
	}
	if strings.Count(got, "Authentication-Results:") != 1 {
		t.Errorf("the forged field with our authserv-id was kept:\n%s", got)
	}
	if dns.Queries("") == 0 {
		t.Error("the hub never asked the configured DNS server")
	}

	// A spoof: bank.test's SPF does not list us, there is no signature,
	// and bank.test publishes p=reject.
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("ceo@bank.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.test"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, "From: <ceo@bank.test>\r\nTo: <bob@example.test>\r\nSubject: wire money\r\n\r\nnow\r\n")
	err = w.Close()
	var pe *textproto.Error
	if !errors.As(err, &pe) || pe.Code != 550 || !strings.HasPrefix(pe.Msg, "5.7.1 Message rejected by the DMARC policy of bank.test") {
		t.Errorf("spoofed From: answered %v, want 550 5.7.1 ... DMARC policy of bank.test", err)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("the session did not go on: %v", err)
	}

	var receives []tracking.Event
	waitUntil(t, 10*time.Second, func() bool {
		tracking.Search(h.Dir+"/log/tracking", tracking.Filter{}, func(e tracking.Event) bool {
			if e.Event == tracking.Receive {
				receives = append(receives, e)
			}
			return true
		})
		return len(receives) > 0
	}, "a RECEIVE event in the tracking log")
	if len(receives) != 1 || receives[0].AuthResults != "spf=pass dkim=none dmarc=pass" {
		t.Errorf("RECEIVE events %+v, want one with auth_results \"spf=pass dkim=none dmarc=pass\"", receives)
	}
}
