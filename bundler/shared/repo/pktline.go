package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// pkt-line framing (gitprotocol-common(5)), read with a budget: every
// message a server sends over git://, ssh:// and smart HTTP goes through
// a pktReader, which never holds more than one packet (65,520 bytes) and
// fails once the budget of the current response is spent.

const (
	pktMaxLen  = 65520 // the largest packet, its 4-byte length included
	pktMaxData = pktMaxLen - 4
)

type pktKind int

const (
	pktData  pktKind = iota
	pktFlush         // 0000: end of a message
	pktDelim         // 0001: end of a section (protocol v2)
	pktEnd           // 0002: end of a response (protocol v2, stateless)
)

// errProtocol marks a reply that does not follow the git protocol.
var errProtocol = errors.New("git protocol error")

// RemoteError is an error the server sent ("ERR ..." or sideband channel
// 3), flattened to printable text and bounded.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return "server said: " + e.Message }

// maxServerText bounds what is kept of a message from a server.
const maxServerText = 512

// serverText is b as one line of printable ASCII of at most maxServerText
// bytes: a server's words may reach a terminal.
func serverText(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if s.Len() >= maxServerText {
			s.WriteString("...")
			break
		}
		switch {
		case c == '\n' || c == '\r' || c == '\t':
			s.WriteByte(' ')
		case c >= 0x20 && c < 0x7f:
			s.WriteByte(c)
		default:
			s.WriteByte('?')
		}
	}
	return strings.TrimSpace(s.String())
}

// pktReader reads pkt-lines from r, each within the remaining budget.
type pktReader struct {
	r    io.Reader
	buf  [pktMaxLen]byte
	left int64  // bytes the current response may still take
	what string // what the budget is for, for its error
	over error  // returned past the budget (nil: "<what> exceeds the size limit")
	n    int64  // bytes read in all
}

func newPktReader(r io.Reader) *pktReader {
	return &pktReader{r: r, left: maxAdvertisement, what: "response"}
}

// budget sets the bound of what follows.
func (p *pktReader) budget(n int64, what string, over error) {
	p.left, p.what, p.over = n, what, over
}

func (p *pktReader) overBudget() error {
	if p.over != nil {
		return p.over
	}
	return fmt.Errorf("%s exceeds the size limit", p.what)
}

func (p *pktReader) readFull(b []byte) error {
	if int64(len(b)) > p.left {
		return p.overBudget()
	}
	n, err := io.ReadFull(p.r, b)
	p.left -= int64(n)
	p.n += int64(n)
	return err
}

// next reads one packet. The data is valid until the next call. A clean
// end of the stream before a packet is io.EOF; within one,
// io.ErrUnexpectedEOF.
func (p *pktReader) next() (pktKind, []byte, error) {
	hdr := p.buf[:4]
	if err := p.readFull(hdr); err != nil {
		return 0, nil, err
	}
	n := 0
	for _, c := range hdr {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, nil, fmt.Errorf("%w: bad packet length %q", errProtocol, serverText(hdr))
		}
		n = n<<4 | int(d)
	}
	switch {
	case n == 0:
		return pktFlush, nil, nil
	case n == 1:
		return pktDelim, nil, nil
	case n == 2:
		return pktEnd, nil, nil
	case n < 4 || n > pktMaxLen:
		return 0, nil, fmt.Errorf("%w: bad packet length %d", errProtocol, n)
	}
	data := p.buf[4:n]
	if err := p.readFull(data); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	if len(data) >= 4 && string(data[:4]) == "ERR " {
		return 0, nil, &RemoteError{Message: serverText(data[4:])}
	}
	return pktData, data, nil
}

// line reads one data packet (any other kind is an error) without its
// trailing newline.
func (p *pktReader) line() (string, error) {
	kind, data, err := p.next()
	if err != nil {
		return "", err
	}
	if kind != pktData {
		return "", fmt.Errorf("%w: unexpected %s packet", errProtocol, kindName(kind))
	}
	return strings.TrimSuffix(string(data), "\n"), nil
}

func kindName(k pktKind) string {
	switch k {
	case pktFlush:
		return "flush"
	case pktDelim:
		return "delimiter"
	case pktEnd:
		return "response-end"
	}
	return "data"
}

// pktWriter buffers pkt-lines of one request.
type pktWriter struct{ b []byte }

func (w *pktWriter) line(s string) {
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	w.b = fmt.Appendf(w.b, "%04x%s", len(s)+4, s)
}

func (w *pktWriter) flush() { w.b = append(w.b, "0000"...) }
func (w *pktWriter) delim() { w.b = append(w.b, "0001"...) }

// sidebandReader is the pack data (channel 1) of a side-band-64k stream,
// which ends at a flush packet. Progress (channel 2) is dropped; an error
// (channel 3) ends the stream with a *RemoteError.
type sidebandReader struct {
	p   *pktReader
	cur []byte
	err error
	// acks: "ACK <oid>" lines may come before the pack's first data (git
	// acknowledges again a have it already knew as common: the parent of
	// an earlier one).
	acks bool
}

func (s *sidebandReader) Read(b []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		kind, data, err := s.p.next()
		switch {
		case err == io.EOF:
			s.err = io.ErrUnexpectedEOF
		case err != nil:
			s.err = err
		case kind == pktFlush:
			s.err = io.EOF
		case kind != pktData || len(data) == 0:
			s.err = fmt.Errorf("%w: unexpected %s packet in the pack stream", errProtocol, kindName(kind))
		case s.acks && bytes.HasPrefix(data, []byte("ACK ")):
		case data[0] == 1:
			s.cur, s.acks = data[1:], false
		case data[0] == 2:
			// progress: not shown
		case data[0] == 3:
			s.err = &RemoteError{Message: serverText(data[1:])}
		default:
			s.err = fmt.Errorf("%w: sideband channel %d", errProtocol, data[0])
		}
	}
	n := copy(b, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}
