package main

import (
	"context"
	"log/slog"
	"time"

	"hubd/internal/daemon"
)

// reload is SIGHUP: the daemon loads the configuration again and puts it
// in force if it is valid, logging what changed or every diagnostic and
// that the running configuration stays (internal/daemon/reload.go; the
// admin API's POST /v1/reload does the same).
func reload(d *daemon.Daemon, log *slog.Logger) {
	if _, err := d.Reload(context.Background()); err != nil {
		log.Error("reload", "err", err)
	}
}

// shutdown stops accepting, lets sessions in DATA finish within the
// configured grace period, and gives deliveries in flight 10 s more.
func shutdown(d *daemon.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.Config().Hub.ShutdownGrace)
	defer cancel()
	return d.Shutdown(ctx, 10*time.Second)
}
