package message

import (
	"bufio"
	"bytes"
	"io"
)

// FieldFilter removes the header fields of one name whose value a
// function condemns, as the receive checks do with the
// Authentication-Results fields that claim to be the hub's own (RFC 8601
// §5). Unlike OrgHeaderFilter, which can judge a field by its name on its
// first line, it must see a field's value, which may be folded over
// several lines: a field of that name is held until the line after it
// shows where it ends, then yielded or dropped whole, first line and
// continuations together. Held bytes are bounded by MaxHeldField; a longer
// field is judged on its first MaxHeldField bytes, and the rest shares
// the verdict. Every other field, and the body, streams through as
// OrgHeaderFilter streams it, with the same rule for the end of the header
// section (classifyStart) and the same blank line put back when every
// field was removed.
type FieldFilter struct {
	br   *bufio.Reader
	name string
	drop func(value []byte) bool

	out  []byte // decided bytes not yet returned (in obuf)
	obuf []byte
	err  error

	inHeader   bool
	midLine    bool   // the last chunk ended inside a line longer than lineBuf
	afterField bool   // a field line came before: a WSP line continues it
	holding    bool   // the current field has the filtered name
	decided    bool   // ... and its verdict is in (it outgrew MaxHeldField)
	dropping   bool   // ... and the verdict is to drop it
	held       []byte // the current field of the filtered name, undecided
	emitted    bool   // some of the header section was yielded
	removed    int
}

// MaxHeldField bounds the bytes of one field a FieldFilter holds before it
// judges it.
const MaxHeldField = 16 << 10

// FilterFields returns a reader of r's message without the header fields
// named name (compared without regard to case) for which drop returns
// true. drop gets the field's raw value: the bytes after the colon,
// folding and final CRLF included.
func FilterFields(r io.Reader, name string, drop func(value []byte) bool) *FieldFilter {
	return &FieldFilter{br: bufio.NewReaderSize(r, lineBuf), name: name, drop: drop, inHeader: true}
}

// Removed returns the number of fields removed so far.
func (f *FieldFilter) Removed() int { return f.removed }

// Read yields the next bytes of the filtered message.
func (f *FieldFilter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(f.out) == 0 {
		switch {
		case f.err != nil:
			return 0, f.err
		case !f.inHeader:
			n, err := f.br.Read(p)
			if err != nil {
				f.err = err
			}
			return n, err
		}
		f.step()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// step reads one line (or one buffer of a long line) of the header section.
func (f *FieldFilter) step() {
	chunk, err := f.br.ReadSlice('\n')
	f.obuf = f.obuf[:0]
	if len(chunk) > 0 {
		switch {
		case f.midLine:
			f.emit(chunk) // the rest of a long line shares its fate
		default:
			switch kind := classifyStart(chunk, f.afterField); kind {
			case lineField:
				f.settle()
				f.afterField = true
				if equalFold(fieldName(chunk), f.name) {
					f.holding, f.decided = true, false
				}
				f.emit(chunk)
			case lineContinuation:
				f.emit(chunk)
			default:
				// The header section is over.
				f.settle()
				f.inHeader = false
				if kind != lineBlank && !f.emitted && f.removed > 0 {
					f.obuf = append(f.obuf, "\r\n"...)
				}
				f.emit(chunk)
			}
		}
		f.midLine = err == bufio.ErrBufferFull && f.inHeader
	}
	if err != nil && err != bufio.ErrBufferFull {
		f.settle() // the message ended inside the header section
		f.err = err
	}
	f.out = f.obuf
}

// emit passes chunk on, holds it, or drops it, by the current field's state.
func (f *FieldFilter) emit(chunk []byte) {
	if f.holding && !f.decided {
		if len(f.held)+len(chunk) <= MaxHeldField {
			f.held = append(f.held, chunk...)
			return
		}
		f.judge()
	}
	if f.holding && f.dropping {
		return
	}
	f.obuf = append(f.obuf, chunk...)
	f.emitted = true
}

// judge decides the held field and yields it unless it is dropped.
func (f *FieldFilter) judge() {
	f.decided = true
	value := f.held
	if i := bytes.IndexByte(value, ':'); i >= 0 {
		value = value[i+1:]
	}
	f.dropping = f.drop(value)
	if f.dropping {
		f.removed++
	} else {
		f.obuf = append(f.obuf, f.held...)
		f.emitted = true
	}
	f.held = f.held[:0]
}

// settle ends the current field: a held one is judged.
func (f *FieldFilter) settle() {
	if f.holding && !f.decided {
		f.judge()
	}
	f.holding, f.dropping = false, false
}
