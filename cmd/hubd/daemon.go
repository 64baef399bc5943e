package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"hubd/internal/daemon"
)

// reload loads the configuration again and puts it in force; on any error
// the running configuration stays and the diagnostics are printed.
func reload(d *daemon.Daemon, log *slog.Logger, path string, diagOut io.Writer) {
	cfg, err := loadConfig(path, diagOut)
	if err != nil {
		log.Error("reload refused: configuration has errors; the running configuration stays in force", "config", path)
		return
	}
	if err := d.Apply(cfg); err != nil {
		log.Error("reload refused: the connectors cannot take the new configuration; the running configuration stays in force", "err", err)
		return
	}
	log.Info("configuration reloaded", "config", path)
}

// shutdown stops accepting, lets sessions in DATA finish within the
// configured grace period, and gives deliveries in flight 10 s more.
func shutdown(d *daemon.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.Config().Hub.ShutdownGrace)
	defer cancel()
	return d.Shutdown(ctx, 10*time.Second)
}
