package gittest

import (
	"bytes"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// CutProxy is a TCP proxy in front of a git:// or HTTP server that cuts a
// fetch in the middle of its pack: from the nth pack it forwards (counting
// from 1) on, it closes the connection a few bytes after the pack's "PACK"
// signature, as a network failure would. It counts the bytes it forwards
// each way, and the connections.
type CutProxy struct {
	URL   string // target's URL with the proxy's address
	l     net.Listener
	packs atomic.Int32
	wg    sync.WaitGroup

	up, down, conns atomic.Int64
}

// Bytes returns the bytes forwarded to the server (up) and to the client
// (down) so far.
func (p *CutProxy) Bytes() (up, down int64) { return p.up.Load(), p.down.Load() }

// Conns is the number of connections accepted so far.
func (p *CutProxy) Conns() int64 { return p.conns.Load() }

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
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if nth <= 0 {
		nth = math.MaxInt32
	}
	p := &CutProxy{URL: scheme + "://" + l.Addr().String() + "/" + path, l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c, addr, int32(nth))
			}()
		}
	}()
	return p, nil
}

func (p *CutProxy) serve(c net.Conn, addr string, nth int32) {
	defer c.Close()
	s, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer s.Close()
	go func() {
		io.Copy(countingWriter{s, &p.up}, c)
		s.(*net.TCPConn).CloseWrite()
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
			if i >= 0 && p.packs.Add(1) >= nth {
				// Pass what precedes the signature and cutAfter bytes of the pack.
				start := i - len(tail)
				left = cutAfter + min(start, 0)
				if start > 0 {
					w, werr := c.Write(chunk[:start])
					p.down.Add(int64(w))
					if werr != nil {
						return
					}
					chunk = chunk[start:]
				}
			}
			tail = append([]byte(nil), seen[max(0, len(seen)-3):]...)
		}
		if left >= 0 {
			if len(chunk) >= left {
				w, _ := c.Write(chunk[:left])
				p.down.Add(int64(w))
				return // the cut
			}
			left -= len(chunk)
		}
		w, werr := c.Write(chunk)
		p.down.Add(int64(w))
		if werr != nil || err != nil {
			return
		}
	}
}

// Close stops the proxy and waits for its connections to end.
func (p *CutProxy) Close() {
	p.l.Close()
	p.wg.Wait()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
