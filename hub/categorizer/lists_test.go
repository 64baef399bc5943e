package categorizer

import (
	"strings"
	"testing"

	"hubd/hub/delivery"
	"hubd/policy"
)

const listDirectory = directory + `
mailbox "carl@example.com" {
  maildir = "mail/carl"
  lmtp    = "127.0.0.1:24"
}
distribution_list "staff@example.com"  { members = ["alice@example.com", "bob@example.com"] }
distribution_list "mixed@example.com"  { members = ["alice@example.com", "x@a.example", "carol@partner.example"] }
distribution_list "outer@example.com"  { members = ["staff@example.com", "mixed@example.com", "y@a.example"] }
distribution_list "la@example.com"     { members = ["lb@example.com", "alice@example.com"] }
distribution_list "lb@example.com"     { members = ["la@example.com", "bob@example.com"] }
distribution_list "self@example.com"   { members = ["self@example.com", "bob@example.com"] }
distribution_list "onlyself@example.com" { members = ["onlyself@example.com"] }
distribution_list "d1@example.com"     { members = ["d2@example.com"] }
distribution_list "d2@example.com"     { members = ["d3@example.com", "alice@example.com"] }
distribution_list "d3@example.com"     { members = ["d4@example.com"] }
distribution_list "d4@example.com"     { members = ["bob@example.com"] }
distribution_list "viaalias@example.com" { members = ["team@example.com"] }
distribution_list "aliaslist@example.com" { members = ["all@example.com"] }
alias "tolist@example.com"             { to = ["staff@example.com"] }
distribution_list "owned@example.com" {
  members = ["alice@example.com", "z@a.example", "inner@example.com", "plain@example.com"]
  owner   = "owned-owner@example.com"
}
distribution_list "inner@example.com" {
  members = ["w@b.example", "bob@example.com"]
  owner   = "inner-owner@example.com"
}
distribution_list "plain@example.com" { members = ["v@c.example"] }
distribution_list "relaylist@relay.example.com" { members = ["bob@example.com", "q@relay.example.com"] }
`

// loadLists loads listDirectory and checks that its lists arrived.
func loadLists(t *testing.T) *policy.Config {
	t.Helper()
	cfg := load(t, listDirectory)
	if cfg.ListFor("staff@example.com") == nil {
		t.Fatal("policy.Load dropped the distribution_list blocks: its per-file merge must append fs.DistributionLists")
	}
	return cfg
}

// listSummary is summary plus each outcome's lists and sender.
func listSummary(out []Outcome) string {
	var parts []string
	for _, o := range out {
		s := summary([]Outcome{o})
		if len(o.Lists) > 0 {
			s += " lists=" + strings.Join(o.Lists, ",")
		}
		if o.Sender != "" {
			s += " from=" + o.Sender
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

func TestDistributionLists(t *testing.T) {
	cfg := loadLists(t)
	const partner = "smtp:partner[[192.0.2.5]:25,backup.partner.example:2525]"
	tests := []struct {
		name     string
		rcpts    []string
		expanded []string
		want     []string
	}{
		{"list of mailboxes", []string{"staff@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=staff@example.com",
			"0:bob@example.com>maildir lists=staff@example.com"}},
		{"list with remote members", []string{"mixed@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=mixed@example.com",
			"0:x@a.example>smtp:internet[mx:a.example] lists=mixed@example.com",
			"0:carol@partner.example>" + partner + " lists=mixed@example.com"}},
		{"nested lists, de-duplicated", []string{"outer@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=outer@example.com,staff@example.com",
			"0:bob@example.com>maildir lists=outer@example.com,staff@example.com",
			"0:x@a.example>smtp:internet[mx:a.example] lists=outer@example.com,mixed@example.com",
			"0:carol@partner.example>" + partner + " lists=outer@example.com,mixed@example.com",
			"0:y@a.example>smtp:internet[mx:a.example] lists=outer@example.com"}},
		{"A∋B∋A delivers once each", []string{"la@example.com"}, nil, []string{
			"0:bob@example.com>maildir lists=la@example.com,lb@example.com",
			"0:alice@example.com>maildir lists=la@example.com"}},
		{"A∋B∋A entered from B", []string{"lb@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=lb@example.com,la@example.com",
			"0:bob@example.com>maildir lists=lb@example.com"}},
		{"both lists of a loop addressed", []string{"la@example.com", "lb@example.com"}, nil, []string{
			"0:bob@example.com>maildir lists=la@example.com,lb@example.com",
			"0:alice@example.com>maildir lists=la@example.com"}},
		{"self-containing list", []string{"self@example.com"}, nil, []string{
			"0:bob@example.com>maildir lists=self@example.com"}},
		{"list of only itself fails 5.2.4", []string{"onlyself@example.com"}, nil, []string{
			"0:onlyself@example.com>fail 5.2.4"}},
		{"list depth limit fails the deep branch only", []string{"d1@example.com"}, nil, []string{
			"0:d4@example.com>fail 5.4.6 lists=d1@example.com,d2@example.com,d3@example.com",
			"0:alice@example.com>maildir lists=d1@example.com,d2@example.com"}},
		{"within the depth limit", []string{"d2@example.com"}, nil, []string{
			"0:bob@example.com>maildir lists=d2@example.com,d3@example.com,d4@example.com",
			"0:alice@example.com>maildir lists=d2@example.com"}},
		{"list of an alias", []string{"viaalias@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=viaalias@example.com",
			"0:bob@example.com>maildir lists=viaalias@example.com",
			"0:carol@partner.example>" + partner + " lists=viaalias@example.com"}},
		{"alias to a list", []string{"tolist@example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=staff@example.com",
			"0:bob@example.com>maildir lists=staff@example.com"}},
		{"list address case-insensitive", []string{"STAFF@Example.com"}, nil, []string{
			"0:alice@example.com>maildir lists=staff@example.com",
			"0:bob@example.com>maildir lists=staff@example.com"}},
		{"list in an internal_relay domain", []string{"relaylist@relay.example.com"}, nil, []string{
			"0:bob@example.com>maildir lists=relaylist@relay.example.com",
			"0:q@relay.example.com>smtp:internet[mx:relay.example.com] lists=relaylist@relay.example.com"}},
		{"mailbox before its list: first occurrence kept", []string{"alice@example.com", "staff@example.com"}, nil, []string{
			"0:alice@example.com>maildir",
			"1:bob@example.com>maildir lists=staff@example.com"}},

		{"expanded list suppressed", []string{"staff@example.com"}, []string{"staff@example.com"}, []string{
			"0:staff@example.com>already-expanded 2.1.5"}},
		{"expanded list matched case-insensitively", []string{"staff@example.com"}, []string{"Staff@EXAMPLE.com"}, []string{
			"0:staff@example.com>already-expanded 2.1.5"}},
		{"other lists still expand", []string{"staff@example.com", "mixed@example.com"}, []string{"mixed@example.com"}, []string{
			"0:alice@example.com>maildir lists=staff@example.com",
			"0:bob@example.com>maildir lists=staff@example.com",
			"1:mixed@example.com>already-expanded 2.1.5"}},
		{"nested expanded list suppressed inside its parent", []string{"outer@example.com"}, []string{"mixed@example.com"}, []string{
			"0:alice@example.com>maildir lists=outer@example.com,staff@example.com",
			"0:bob@example.com>maildir lists=outer@example.com,staff@example.com",
			"0:mixed@example.com>already-expanded 2.1.5 lists=outer@example.com",
			"0:y@a.example>smtp:internet[mx:a.example] lists=outer@example.com"}},
		{"loop across hubs: the trace stops the second expansion", []string{"la@example.com"}, []string{"lb@example.com"}, []string{
			"0:lb@example.com>already-expanded 2.1.5 lists=la@example.com",
			"0:alice@example.com>maildir lists=la@example.com"}},
		{"trace for an unknown list is ignored", []string{"staff@example.com"}, []string{"gone@example.com"}, []string{
			"0:alice@example.com>maildir lists=staff@example.com",
			"0:bob@example.com>maildir lists=staff@example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := CategorizeMessage(cfg, Message{Size: 100, ExpandedLists: tt.expanded}, inputs(tt.rcpts...))
			if got, want := listSummary(out), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("CategorizeMessage(%v, expanded %v)\n got:\n%s\nwant:\n%s", tt.rcpts, tt.expanded, got, want)
			}
		})
	}
}

func TestListReplies(t *testing.T) {
	cfg := loadLists(t)
	out := CategorizeMessage(cfg, Message{ExpandedLists: []string{"staff@example.com"}}, inputs("staff@example.com"))
	want := policy.Reply{Code: 250, Enhanced: "2.1.5", Text: "List already expanded for this message"}
	if len(out) != 1 || out[0].Reply == nil || *out[0].Reply != want || out[0].ResolvedFrom != "" {
		t.Fatalf("already expanded: %+v", out)
	}
	if len(Bifurcate(out)) != 0 {
		t.Fatal("an already expanded list became a work item")
	}
	deep := Categorize(cfg, 10, inputs("d1@example.com"))[0]
	if deep.Reply.Code != 554 || deep.ResolvedFrom != "d1@example.com" || !strings.Contains(deep.Why, "max_alias_depth 3") {
		t.Fatalf("too deep: %+v", deep)
	}
	empty := Categorize(cfg, 10, inputs("onlyself@example.com"))[0]
	if empty.Reply.Code != 550 || !strings.Contains(empty.Why, "no recipients") {
		t.Fatalf("empty: %+v", empty)
	}
	// Diamond nesting expands each list once: outcomes stay linear.
	mixed := Categorize(cfg, 10, inputs("outer@example.com", "mixed@example.com", "staff@example.com"))
	if len(mixed) != 5 {
		t.Fatalf("re-addressed nested lists: %s", listSummary(mixed))
	}
}

func TestListOwner(t *testing.T) {
	cfg := loadLists(t)
	out := Categorize(cfg, 10, inputs("owned@example.com"))
	want := strings.Join([]string{
		"0:alice@example.com>maildir lists=owned@example.com",
		"0:z@a.example>smtp:internet[mx:a.example] lists=owned@example.com from=owned-owner@example.com",
		"0:w@b.example>smtp:internet[mx:b.example] lists=owned@example.com,inner@example.com from=inner-owner@example.com",
		"0:bob@example.com>maildir lists=owned@example.com,inner@example.com",
		"0:v@c.example>smtp:internet[mx:c.example] lists=owned@example.com,plain@example.com from=owned-owner@example.com",
	}, "\n")
	if got := listSummary(out); got != want {
		t.Fatalf("owner\n got:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(out[2].Why, "envelope sender inner-owner@example.com (owner of list inner@example.com)") {
		t.Errorf("why: %s", out[2].Why)
	}
	// The owner applies only through the list: addressed directly, the
	// remote recipient keeps the author's sender.
	if o := Categorize(cfg, 10, inputs("z@a.example"))[0]; o.Sender != "" || len(o.Lists) != 0 {
		t.Errorf("direct remote recipient: %+v", o)
	}
	// An unreachable copy keeps the owner: it is routed later.
	lonely := load(t, `
accepted_domain "example.com" {}
mailbox "bob@example.com" {}
distribution_list "l@example.com" {
  members = ["bob@example.com", "r@nowhere.example"]
  owner   = "bob@example.com"
}
`)
	out = Categorize(lonely, 10, inputs("l@example.com"))
	if len(out) != 2 || out[1].Disposition != Unreachable || out[1].Sender != "bob@example.com" || out[0].Sender != "" {
		t.Fatalf("unreachable remote member: %s", listSummary(out))
	}
}

func TestLMTPMailbox(t *testing.T) {
	cfg := load(t, listDirectory)
	out := Categorize(cfg, 10, inputs("carl@example.com"))
	want := delivery.NextHop{Kind: delivery.KindLMTP, SmartHosts: "127.0.0.1:24", FQDN: "hub.example.com"}
	if len(out) != 1 || out[0].NextHop != want || out[0].Maildir != "" || out[0].Disposition != Deliver {
		t.Fatalf("LMTP mailbox: %+v", out)
	}
	if !strings.Contains(out[0].Why, "LMTP 127.0.0.1:24") {
		t.Errorf("why: %s", out[0].Why)
	}
	again := Categorize(cfg, 10, inputs(out[0].Address))
	if len(again) != 1 || again[0].NextHop != want {
		t.Errorf("LMTP mailbox is not a fixed point: %+v", again)
	}
}

func TestBifurcateBySenderAndLists(t *testing.T) {
	cfg := loadLists(t)
	out := Categorize(cfg, 10, inputs(
		"q@a.example", "owned@example.com", "staff@example.com", "carl@example.com", "r@a.example"))
	var got []string
	for _, it := range Bifurcate(out) {
		var addrs []string
		for _, i := range it.Outcomes {
			addrs = append(addrs, out[i].Address)
		}
		got = append(got, it.NextHop.String()+" from="+it.Sender+" lists="+strings.Join(it.Lists, ",")+" = "+strings.Join(addrs, ","))
	}
	want := []string{
		"smtp:internet[mx:a.example] from= lists= = q@a.example,r@a.example",
		"maildir from= lists=owned@example.com = alice@example.com",
		"smtp:internet[mx:a.example] from=owned-owner@example.com lists=owned@example.com = z@a.example",
		"smtp:internet[mx:b.example] from=inner-owner@example.com lists=owned@example.com,inner@example.com = w@b.example",
		"maildir from= lists=owned@example.com,inner@example.com = bob@example.com",
		"smtp:internet[mx:c.example] from=owned-owner@example.com lists=owned@example.com,plain@example.com = v@c.example",
		"lmtp:127.0.0.1:24 from= lists= = carl@example.com",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("work items\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
