package mime7bit

// kind is what an entity's body is.
type kind uint8

const (
	kindLeaf      kind = iota // content: re-encoded, folded or kept
	kindMultipart             // preamble, parts, epilogue
	kindMessage               // message/rfc822: one embedded entity
)

// encoding is the class of a Content-Transfer-Encoding (RFC 2045 §6.1).
type encoding uint8

const (
	encIdentity encoding = iota // absent, 7bit, 8bit, binary
	encQP                       // quoted-printable
	encBase64                   // base64
	encOther                    // anything else: left alone
)

// action is what happens to one body region.
type action uint8

const (
	actKeep     action = iota // as it is
	actFoldSP                 // lines over MaxLine broken with CRLF SP
	actFoldQP                 // ... with a soft line break "=" CRLF
	actFoldB64                // ... with a CRLF
	actSanitize               // preamble/epilogue: 8-bit octets become '?', lines folded with CRLF SP
	actToQP                   // re-encoded quoted-printable
	actToBase64               // re-encoded base64
)

// stats is what analysis saw of one body region.
type stats struct {
	has8 bool // an octet above 127
	bare bool // a CR or LF not in a CRLF pair
	long int  // lines longer than MaxLine
}

// signature says why an entity's content may not be re-encoded.
type signature uint8

const (
	unsigned  signature = iota
	sigMIME             // inside a multipart/signed (RFC 1847)
	sigHeader           // in a message with DKIM-Signature or ARC-Message-Signature
)

// entity is one MIME entity (a message or a part), in document order: what
// analysis found, then what WriteTo does with it. It is kept small: a plan
// holds one per entity.
type entity struct {
	kind      kind
	enc       encoding
	text      bool      // text/* (or not MIME at all): quoted-printable is its re-encoding
	opaque    bool      // a body RFC 2046 allows no encoding for (message/*), or not walked
	nonMIME   bool      // a message without MIME-Version and Content-Type
	message   bool      // its header is a message header (the top level, or message/rfc822's body)
	mimeVer   bool      // a message header with MIME-Version
	signed    signature // why its content may not change
	hdr8      bool      // its header section has an octet above 127
	msg       int32     // index of the entity whose header is the message header it belongs to
	body      stats     // a leaf's content
	pre, epi  stats     // a multipart's preamble and epilogue
	bodyAct   action
	preAct    action
	epiAct    action
	cte       string // new Content-Transfer-Encoding, "" when unchanged
	addMIME   bool   // add MIME-Version: 1.0 to this message header
	addCTType bool   // not MIME: add Content-Type text/plain with charset
}

// decide turns what the walk found into actions, and the refusal if some
// 8-bit content cannot be converted.
func (p *Plan) decide(w *walker) {
	p.Body8bit = p.body.body.has8
	if p.Header8bit {
		p.Output8bit = true
	}
	if p.flat {
		// Too many entities to plan one by one: the body is one region
		// that is never re-encoded.
		p.body.opaque = true
		p.leaf(&p.body)
		if p.Refusal != "" {
			p.Refusal = "the message has more than 10000 MIME parts and would need converting"
		}
		return
	}
	for i := range p.ents {
		e := p.ents[i]
		if i > 0 && e.hdr8 {
			p.Output8bit = true
			if !p.opts.EightBit {
				p.refuse("8-bit octets in the header of a MIME part or attached message cannot be converted")
			}
		}
		switch e.kind {
		case kindLeaf:
			p.leaf(e)
			if e.bodyAct == actToQP || e.bodyAct == actToBase64 {
				p.Converted++
				if m := p.ents[e.msg]; !m.mimeVer && !m.nonMIME {
					m.addMIME = true
				}
			}
		case kindMultipart:
			e.preAct = p.filler(e.pre, e.signed)
			e.epiAct = p.filler(e.epi, e.signed)
		}
	}
}

// leaf decides a leaf's action: re-encode what does not fit where that is
// allowed, fold where it is not, refuse 8-bit octets that cannot stay.
func (p *Plan) leaf(e *entity) {
	st := e.body
	eight := st.has8 && !p.opts.EightBit
	keep := func(a action) {
		e.bodyAct = a
		if a != actKeep {
			p.Folded += st.long
		}
		if st.has8 {
			p.Output8bit = true
		}
	}
	switch {
	case !eight && st.long == 0:
		keep(actKeep)
	case e.enc == encQP:
		if eight {
			p.refuse("8-bit octets in a quoted-printable part")
		}
		keep(actFoldQP)
	case e.enc == encBase64:
		if eight {
			p.refuse("8-bit octets in a base64 part")
		}
		keep(actFoldB64)
	case e.enc == encOther:
		if eight {
			p.refuse("8-bit octets in a part with an unknown Content-Transfer-Encoding")
		}
		keep(actFoldSP)
	case e.signed != unsigned || e.opaque:
		if eight {
			p.refuse(signedReason(e))
		}
		keep(actFoldSP)
	case e.text && !st.bare:
		e.bodyAct, e.cte = actToQP, "quoted-printable"
	default:
		e.bodyAct, e.cte = actToBase64, "base64"
	}
	if e.nonMIME && e.cte != "" {
		e.addMIME, e.addCTType = true, true
	}
}

func signedReason(e *entity) string {
	switch e.signed {
	case sigMIME:
		return "8-bit content in a multipart/signed part, which may not be converted (RFC 1847)"
	case sigHeader:
		return "8-bit content in a message signed with DKIM-Signature or ARC-Message-Signature, which may not be converted"
	}
	return "8-bit content in a message/* part, which may not be encoded (RFC 2046 §5.2)"
}

// filler decides a preamble's or epilogue's action (RFC 2046 §5.1.1: MIME
// readers ignore them).
func (p *Plan) filler(st stats, signed signature) action {
	eight := st.has8 && !p.opts.EightBit
	switch {
	case !eight && st.long == 0:
		if st.has8 {
			p.Output8bit = true
		}
		return actKeep
	case eight && signed != unsigned:
		p.refuse(signedReason(&entity{signed: signed}))
		return actKeep
	case eight:
		p.Folded += st.long
		return actSanitize
	}
	if st.has8 {
		p.Output8bit = true
	}
	p.Folded += st.long
	return actFoldSP
}

func (p *Plan) refuse(why string) {
	if p.Refusal == "" {
		p.Refusal = why
	}
}
