package main

// cmdConfig: TODO
func cmdConfig(e *env, args []string) int {
	_ = args
	e.stderr.Write([]byte("hubctl: not implemented yet\n"))
	return 70
}
