// Package enhancedstatus reads RFC 3463 enhanced mail system status codes,
// the "5.1.1" of "550 5.1.1 User unknown".
//
// RFC 3463 §2: status-code = class "." subject "." detail, where class is
// "2", "4" or "5" and subject and detail are 1 to 3 digits each. RFC 2034
// §4 adds that in an SMTP reply the code's class matches the first digit of
// the reply code; ForReply checks that too.
package enhancedstatus

import "strings"

// Valid reports whether s is a well-formed status code.
func Valid(s string) bool {
	_, ok := class(s)
	return ok
}

// ForReply reports whether s is a well-formed status code whose class is
// that of the SMTP reply code (RFC 2034 §4): "4.7.1" for a 451, not for a
// 550.
func ForReply(s string, replyCode int) bool {
	c, ok := class(s)
	return ok && c == replyCode/100
}

// class is the class of the status code s, or false when s is not one.
func class(s string) (int, bool) {
	c, rest, ok := strings.Cut(s, ".")
	if !ok || len(c) != 1 || !strings.Contains("245", c) {
		return 0, false
	}
	subject, detail, ok := strings.Cut(rest, ".")
	if !ok || !digits(subject) || !digits(detail) {
		return 0, false
	}
	return int(c[0] - '0'), true
}

// digits reports whether s is 1 to 3 decimal digits.
func digits(s string) bool {
	if len(s) < 1 || len(s) > 3 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
