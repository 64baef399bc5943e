package sendmail

func runMailq(args []string, std IO) error      { return fail(ExUsage, "not yet") }
func runNewaliases(args []string, std IO) error { return fail(ExUsage, "not yet") }
func mailq(o *options, std IO) error            { return fail(ExUsage, "not yet") }
func newaliases(o *options, std IO) error       { return fail(ExUsage, "not yet") }
