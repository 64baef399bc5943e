// Package jsqueue is a queue.Store on NATS JetStream: several hubs keep one
// replicated queue, and the messages of a hub that dies are taken over by
// the others (docs/cluster.md).
//
// # What is stored where
//
//	stream HUBD_MSGS, subject hubd.msg.<id>   one message per queued message: its record
//	                                           (envelope, arrival, size, owner, initial
//	                                           state) in the Hubd-Record header, its body as
//	                                           the data, or in the object store when larger
//	                                           than the inline limit (Hubd-Body: object)
//	object store hubd_bodies, object <id>      bodies over the inline limit, chunked
//	KV bucket hubd_state, key <id>              the latest State and its owner, once the
//	                                           message was first updated or taken over
//	KV bucket hubd_nodes, key <node>            a live hub's heartbeat, expiring after NodeTTL
//	KV bucket hubd_slots, key slot.<h>.<i>      a next hop's delivery slot held by a hub,
//	                                           expiring after its TTL unless refreshed (Slots)
//
// Every stream and bucket has the configured replicas. A publish returns its
// acknowledgement only when the stream's quorum stored it (R3: two of three
// nodes), so Put, Update and Remove return nil only then: an acknowledged
// message survives the loss of any one node. With one replica the node must
// fsync every write (policy.Queue.SyncAlways).
//
// # Ownership
//
// Every message has one owner, the hub that works on it: its transport
// schedules it, categorizes it and delivers it. The hub that accepts a
// message owns it. The owner is in the record until the message's first
// State write, then in its KV entry. Each write of the KV entry is
// conditional on the revision this hub last saw (KV Update with revision,
// or Create for the first write): a hub whose message was taken over by
// another fails its next write with queue.ErrLeaseLost, forgets the
// message (Options.Lost) and never settles it. Two owners therefore never
// both settle one message, but a delivery that was under way when the
// message was taken over may be made twice (at least once, never zero).
//
// A live hub refreshes its heartbeat every NodeTTL/5. A hub whose heartbeat
// is missing is dead: the live hubs take its messages over, each the ones
// whose ID hashes to its place among the live hubs sorted by name, and any
// left over at the next sweep. A take-over is the conditional write that
// names the new owner; the new owner's transport then schedules the
// message (Options.Adopt) as if it had found it at its own start.
//
// # Deaths
//
// Active marks (queue.Store.MarkActive) stay on the hub's own disk
// (marks.go): a hub that dies and starts again records the deaths in the
// messages it still owns, as the local spool does, so a message that kills
// its hub is poisoned after the threshold. A hub that takes a dead hub's
// messages over does not see that hub's marks: there, a death counts no
// crash against any message (it parks nothing innocent), and a message
// that kills every hub it is taken to is caught by its panics' count and
// by each hub's own restarts only.
package jsqueue
