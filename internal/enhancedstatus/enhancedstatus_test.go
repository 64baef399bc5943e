package enhancedstatus

import "testing"

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"2.0.0": true, "4.7.1": true, "5.1.1": true, "5.7.26": true, "4.999.999": true, "5.01.1": true,
		"": false, "5": false, "5.1": false, "5.1.": false, "5..1": false, ".1.1": false,
		"3.1.1": false, "6.0.0": false, "55.1.1": false, "5.1.1.1": false, "5.1000.1": false,
		"5.1.1000": false, "5.+1.1": false, "5.x.1": false, "5.1.1 ": false, " 5.1.1": false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestForReply(t *testing.T) {
	for _, c := range []struct {
		s    string
		code int
		want bool
	}{
		{"2.0.0", 250, true}, {"4.7.1", 451, true}, {"5.1.1", 550, true},
		{"5.1.1", 450, false}, {"4.7.1", 550, false}, {"2.0.0", 354, false}, {"5.1", 550, false},
	} {
		if got := ForReply(c.s, c.code); got != c.want {
			t.Errorf("ForReply(%q, %d) = %v, want %v", c.s, c.code, got, c.want)
		}
	}
}
