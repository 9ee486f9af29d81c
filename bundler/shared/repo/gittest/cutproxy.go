package gittest

import (
	"bytes"
	"math"
	"net"
	"strings"
	"sync/atomic"
)

// CutProxy is a TCP proxy in front of a git:// or HTTP server that cuts a
// fetch in the middle of its pack: from the nth pack it forwards (counting
// from 1) on, it closes the connection a few bytes after the pack's "PACK"
// signature, as a network failure would. It counts what it forwards as a
// [Proxy] does.
type CutProxy struct {
	*Proxy
	URL   string // target's URL with the proxy's address
	packs atomic.Int32
}

// cutAfter is how many bytes of a pack, its signature included, pass
// before the cut: past the header, inside the first object.
const cutAfter = 40

// NewCutProxy proxies target (git://HOST:PORT/PATH or http://HOST:PORT/PATH)
// and cuts the nth pack and every one after it; nth 0 cuts none (a
// counting proxy).
func NewCutProxy(target string, nth int) (*CutProxy, error) {
	scheme, hostPath, ok := strings.Cut(target, "://")
	if !ok {
		scheme, hostPath = "git", target
	}
	addr, path, _ := strings.Cut(hostPath, "/")
	if nth <= 0 {
		nth = math.MaxInt32
	}
	cp := &CutProxy{}
	p, err := newProxy(addr, func(p *Proxy, c, s net.Conn) { cp.serve(p, c, s, int32(nth)) })
	if err != nil {
		return nil, err
	}
	cp.Proxy, cp.URL = p, scheme+"://"+p.Addr+"/"+path
	return cp, nil
}

func (cp *CutProxy) serve(p *Proxy, c, s net.Conn, nth int32) {
	go func() {
		p.copy(s, c, &p.up)
		closeWrite(s)
	}()
	buf := make([]byte, 32<<10)
	var tail []byte // the last bytes seen, for a signature split over reads
	left := -1      // bytes still to pass before the cut; -1: not cutting
	counted := false
	for {
		n, err := s.Read(buf)
		chunk := buf[:n]
		if !counted {
			seen := append(tail, chunk...)
			i := bytes.Index(seen, []byte("PACK"))
			if i >= 0 {
				counted = true
			}
			if i >= 0 && cp.packs.Add(1) >= nth {
				// Pass what precedes the signature and cutAfter bytes of the pack.
				start := i - len(tail)
				left = cutAfter + min(start, 0)
				if start > 0 {
					if !p.pass(c, chunk[:start], &p.down) {
						return
					}
					chunk = chunk[start:]
				}
			}
			tail = append([]byte(nil), seen[max(0, len(seen)-3):]...)
		}
		if left >= 0 {
			if len(chunk) >= left {
				p.pass(c, chunk[:left], &p.down)
				return // the cut
			}
			left -= len(chunk)
		}
		if len(chunk) > 0 && !p.pass(c, chunk, &p.down) {
			return
		}
		if err != nil {
			return
		}
	}
}
