package main

// cmdStatus: TODO
func cmdStatus(e *env, args []string) int {
	_ = args
	e.stderr.Write([]byte("hubctl: not implemented yet\n"))
	return 70
}
