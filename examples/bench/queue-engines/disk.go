package main

// Engine "disk": today's hubd spool (hubd/hub/queue.DiskStore, one file per
// message, fsync per file + group-committed directory fsync), imported
// through `replace hubd => ../../..` in go.mod. The envelope bytes are
// not used: DiskStore writes its own JSON record of a hub.Envelope with
// one recipient, which is what hubd writes in production.

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

type diskEngine struct {
	s   *queue.DiskStore
	ids sync.Map // uint64 → hub.QueueID
}

func openDisk(dir string) (*diskEngine, error) {
	s, err := queue.OpenDisk(queue.DiskOptions{Dir: dir})
	if err != nil {
		return nil, err
	}
	return &diskEngine{s: s}, nil
}

func rcpt(id uint64) hub.Recipient {
	return hub.Recipient{Address: fmt.Sprintf("rcpt%d@example.net", id), Notify: []string{"FAILURE", "DELAY"}}
}

func (d *diskEngine) Submit(id uint64, _, body []byte) error {
	r := rcpt(id)
	m := &queue.Message{
		Envelope: hub.Envelope{From: fmt.Sprintf("sender%d@example.org", id), Recipients: []hub.Recipient{r}, Body: "8BITMIME", ReceivedAt: time.Now()},
		Arrived:  time.Now(),
		State:    queue.State{Recipients: []queue.RecipientState{{Address: r.Address, DSN: r, Status: queue.Queued}}},
	}
	if err := d.s.Put(context.Background(), m, bytes.NewReader(body)); err != nil {
		return err
	}
	d.ids.Store(id, m.ID)
	return nil
}

func (d *diskEngine) State(id uint64, kind byte, payload []byte) error {
	qid, _ := d.ids.Load(id)
	r := rcpt(id)
	rs := queue.RecipientState{Address: r.Address, DSN: r, Status: queue.Deferred, Attempts: 1, NextAttempt: time.Now().Add(time.Hour), NextHop: "mx.example.net"}
	if kind == 'S' {
		rs.Status, rs.NextAttempt = queue.Delivered, time.Time{}
		rs.LastReply = queue.Reply{Code: 250, Enhanced: "2.0.0", Text: string(payload)}
	}
	return d.s.Update(context.Background(), qid.(hub.QueueID), queue.State{Recipients: []queue.RecipientState{rs}})
}

func (d *diskEngine) Settle(id uint64) error {
	qid, _ := d.ids.LoadAndDelete(id)
	return d.s.Remove(qid.(hub.QueueID))
}

// HopRetry: today's spool has no per-hop record; a dead hop costs one
// Update per waiting message (measured by -retry as per_msg_*).
func (d *diskEngine) HopRetry(string, time.Time) (bool, error) { return false, nil }

func (d *diskEngine) Fsyncs() int64 { return -1 }

func (d *diskEngine) Close() error { return d.s.Close() }
