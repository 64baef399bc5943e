package main

// cmdReload: TODO
func cmdReload(e *env, args []string) int {
	_ = args
	e.stderr.Write([]byte("hubctl: not implemented yet\n"))
	return 70
}
