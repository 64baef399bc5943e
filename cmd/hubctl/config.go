package main

import (
	"errors"
	"fmt"

	"hubd/policy"
)

// cmdConfig is `hubctl config check PATH`: the validation `hubd check`
// runs, locally (no API call), printing every diagnostic with its source
// snippet and, when valid, the hash `hubctl status` shows for the
// configuration in force, so an operator can tell whether a file is what
// hubd runs.
func cmdConfig(e *env, args []string) int {
	const usage = "config check PATH [--json]"
	rest, err := parseInterspersed(newFlags(e, "config"), args)
	if err != nil {
		return 64
	}
	if len(rest) != 2 || rest[0] != "check" {
		return usageError(e, "config: expected \"check PATH\"", usage)
	}
	path := rest[1]
	cfg, err := policy.Load(path)
	type result struct {
		Path       string `json:"path"`
		OK         bool   `json:"ok"`
		ConfigHash string `json:"config_hash,omitempty"`
		Error      string `json:"error,omitempty"`
		Warnings   int    `json:"warnings,omitempty"`
	}
	if err != nil {
		var le *policy.LoadError
		if errors.As(err, &le) {
			le.Write(e.stderr, false)
		} else {
			fmt.Fprintf(e.stderr, "hubctl: %v\n", err)
		}
		if e.json {
			printJSON(e, result{Path: path, Error: err.Error()})
		}
		return 1
	}
	if len(cfg.Warnings) > 0 {
		policy.WriteDiagnostics(e.stderr, cfg.Files(), cfg.Warnings, false)
	}
	hash := cfg.Hash()
	if e.json {
		return printJSON(e, result{Path: path, OK: true, ConfigHash: hash, Warnings: len(cfg.Warnings)})
	}
	fmt.Fprintf(e.stdout, "%s: configuration OK (%d receive connectors, %d send connectors, %d accepted domains, %d mailboxes); %s\n",
		path, len(cfg.ReceiveConnectors), len(cfg.SendConnectors), len(cfg.AcceptedDomains), len(cfg.Mailboxes), hash)
	return 0
}
