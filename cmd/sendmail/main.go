// Command sendmail is hubd's sendmail(1): it writes a message from standard
// input into hubd's maildrop, where hubd picks it up, whether hubd is running
// or not. Installed as /usr/sbin/sendmail (setgid to the maildrop group), and
// linked as mailq and newaliases, it replaces Postfix's commands of those
// names; see internal/sendmail for the options and exit codes.
package main

import (
	"os"

	"hubd/internal/sendmail"
)

func main() {
	os.Exit(sendmail.Main(os.Args[0], os.Args[1:], sendmail.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}))
}
