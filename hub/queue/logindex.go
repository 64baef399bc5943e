package queue

// The log spool's index in RAM, and the accounting that decides when a
// segment can go (LogStore; log.go).
//
// A record is needed while it carries something a Load must see:
//
//   - the MSG record of a queued message (its envelope, and its body when
//     inline);
//   - the latest STATE record of a queued message (older ones are not);
//   - a SETTLE record, while the segment holding the MSG record it
//     cancels exists: were the SETTLE to go first, a crash and a Load
//     would bring the delivered message back. A SETTLE in the same segment
//     as its MSG is never needed (the two go together). When a message
//     has an older MSG record too (compaction copied it forward and a
//     crash came before the old segment was unlinked), the SETTLE is
//     needed until that segment is gone as well.
//
// Each segment counts its needed records and their bytes. A sealed segment
// needing nothing is unlinked (reclaim, logcommit.go); one whose needed
// bytes are under a quarter of its size has them copied forward
// (logcompact.go) and is then unlinked.

import (
	"encoding/json"

	"hubd/hub"
)

// loc is where a record is: segment number, offset, length. Segments are
// at most 1 GiB plus one batch, so 32 bits suffice.
type loc struct{ seg, off, len uint32 }

// logEntry is the index entry of one queued message: where its MSG record
// and its latest STATE record are (st.len == 0: none, the MSG record's
// state is the latest). 24 bytes, no pointers: with its 14-byte key a
// map slot is 40 bytes, so the index costs about 60 bytes per message
// with the map's free slots (BenchmarkLogIndexMemory).
//
// Nothing else is kept per message. Open reads what it needs of the MSG
// record (where the body starts, the record's CRC) from the record itself,
// and the rare facts that concern few messages are kept in side tables of
// logIndex: blobs, shadows.
type logEntry struct {
	msg, st loc
}

// Key is a queue ID packed into 14 bytes: its 21 base32hex characters
// (hub.NewQueueID), 5 bits each, most significant first. Keys compare
// like the IDs they encode, and every valid ID has its own key. The spool's
// index and LocalWork keep keys, not strings; so does the transport for a
// message it keeps no entry for (a waiting message, Work.SetNote).
type Key [14]byte

// KeyOf packs id; false when id is not hub.QueueID.Valid.
func KeyOf(id hub.QueueID) (Key, bool) {
	if !id.Valid() {
		return Key{}, false
	}
	return keyOf(id), true
}

// ID unpacks k (a new string each call).
func (k Key) ID() hub.QueueID { return k.id() }

// keyOf packs id, which must be valid (hub.QueueID.Valid).
func keyOf(id hub.QueueID) Key {
	var k Key
	var acc uint32
	bits, j := 0, 0
	for i := 0; i < len(id) && i < idLen; i++ {
		acc = acc<<5 | uint32(b32val(id[i]))
		bits += 5
		if bits >= 8 {
			bits -= 8
			k[j] = byte(acc >> bits)
			j++
		}
	}
	if bits > 0 {
		k[j] = byte(acc << (8 - bits))
	}
	return k
}

// id unpacks k.
func (k Key) id() hub.QueueID {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	var b [idLen]byte
	for i := range b {
		bit := i * 5
		v := uint16(k[bit/8])<<8 | uint16(k[bit/8+1]) // bit/8+1 <= 13: in range
		b[i] = digits[v>>(11-bit%8)&31]
	}
	return hub.QueueID(b[:])
}

func b32val(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// settleRef is a needed SETTLE record: in segment seg, cancelling id.
type settleRef struct {
	seg uint32
	id  Key
}

type segInfo struct {
	size      int64
	live      int   // needed records
	liveBytes int64 // their bytes
	// settles are the SETTLE records, in other segments, that cancel MSG
	// records in this one: needed until this segment is gone.
	settles []settleRef
}

type logIndex struct {
	entries map[Key]logEntry
	// blobs are the queued messages whose body is a file under blob/
	// (larger than inlineMax: few).
	blobs map[Key]struct{}
	// shadows: for a message whose MSG record compaction copied forward,
	// the segment that still holds an older MSG record of it, until that
	// segment is unlinked (removeSegment).
	shadows map[Key]uint32
	// hops: the next hops with a needed HOP record (loghop.go).
	hops map[string]*hopEntry
	segs map[uint32]*segInfo
}

const settleSize = recHeader + recFixed

func newLogIndex() *logIndex {
	return &logIndex{entries: map[Key]logEntry{}, blobs: map[Key]struct{}{},
		shadows: map[Key]uint32{}, hops: map[string]*hopEntry{}, segs: map[uint32]*segInfo{}}
}

func (x *logIndex) seg(n uint32) *segInfo {
	si := x.segs[n]
	if si == nil {
		si = &segInfo{}
		x.segs[n] = si
	}
	return si
}

func (x *logIndex) need(l loc) {
	si := x.seg(l.seg)
	si.live++
	si.liveBytes += int64(l.len)
}

func (x *logIndex) release(l loc) {
	if si := x.segs[l.seg]; si != nil && l.len > 0 {
		si.live--
		si.liveBytes -= int64(l.len)
	}
}

// has reports whether id is queued.
func (x *logIndex) has(id hub.QueueID) bool {
	_, ok := x.entries[keyOf(id)]
	return ok
}

// lookup returns id's entry and whether its body is a blob.
func (x *logIndex) lookup(id hub.QueueID) (e logEntry, blob, ok bool) {
	k := keyOf(id)
	if e, ok = x.entries[k]; ok {
		_, blob = x.blobs[k]
	}
	return e, blob, ok
}

// apply takes record rec, durable at l, into the index. It reports
// whether rec settled a message whose body is a blob (to be unlinked
// now).
func (x *logIndex) apply(rec *pendingRec, l loc) bool {
	if rec.kind == recHop {
		x.applyHop(rec.hop, l)
		return false
	}
	k := keyOf(rec.id)
	switch rec.kind {
	case recMsg:
		e := logEntry{msg: l}
		if old, ok := x.entries[k]; ok { // a copy made by compaction
			x.release(old.msg)
			x.release(old.st)
			if sh, ok := x.shadows[k]; !ok || x.segs[sh] == nil {
				// The oldest goes last (reclaim runs oldest first).
				x.shadows[k] = old.msg.seg
			}
		}
		x.entries[k] = e
		if rec.blob {
			x.blobs[k] = struct{}{}
		} else {
			delete(x.blobs, k)
		}
		x.need(l)
	case recState:
		e, ok := x.entries[k]
		if !ok {
			return false // the message was removed meanwhile: not needed
		}
		x.release(e.st)
		e.st = l
		x.entries[k] = e
		x.need(l)
	case recSettle:
		if rec.settleFor != 0 {
			x.moveSettle(rec, k, l)
			return false
		}
		e, ok := x.entries[k]
		if !ok {
			return false
		}
		x.release(e.msg)
		x.release(e.st)
		delete(x.entries, k)
		_, blob := x.blobs[k]
		delete(x.blobs, k)
		shadow := x.shadows[k]
		delete(x.shadows, k)
		for _, target := range []uint32{e.msg.seg, shadow} {
			if t := x.segs[target]; t != nil && target != l.seg {
				x.need(loc{seg: l.seg, len: settleSize})
				t.settles = append(t.settles, settleRef{l.seg, k})
			}
		}
		return blob
	}
	return false
}

// moveSettle records that the SETTLE of k cancelling a MSG record in
// segment rec.settleFor was copied forward to l.
func (x *logIndex) moveSettle(rec *pendingRec, k Key, l loc) {
	t := x.segs[rec.settleFor]
	if t == nil {
		return
	}
	if i := rec.settleAt - 1; i >= 0 && i < len(t.settles) && t.settles[i].id == k {
		x.release(loc{seg: t.settles[i].seg, len: settleSize})
		t.settles[i].seg = l.seg
		x.need(l)
		return
	}
	for i, ref := range t.settles {
		if ref.id == k {
			x.release(loc{seg: ref.seg, len: settleSize})
			t.settles[i].seg = l.seg
			x.need(l)
			return
		}
	}
}

// removeSegment forgets segment n, unlinked: the SETTLE records that
// cancelled its MSG records are needed no more, nor are the shadows it
// held.
func (x *logIndex) removeSegment(n uint32) {
	si := x.segs[n]
	if si == nil {
		return
	}
	for _, ref := range si.settles {
		x.release(loc{seg: ref.seg, len: settleSize})
	}
	delete(x.segs, n)
	x.removeHopSegment(n)
	for k, sh := range x.shadows {
		if sh == n {
			delete(x.shadows, k)
		}
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
