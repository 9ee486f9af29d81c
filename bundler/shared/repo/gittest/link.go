package gittest

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// LinkOptions describe the network a [Link] emulates. Zero values mean
// "as loopback": no cap, no delay, no cut.
type LinkOptions struct {
	// CutEvery closes a connection once it carried this many bytes from
	// the server (a link that drops every N bytes).
	CutEvery int64
	// CutLinkEvery closes the connection that carries the link's Nth byte
	// from the server since the last such cut, whichever connection it is:
	// a link that drops every N bytes however the client spreads its
	// requests over connections (one a request, as protocol v0 over ssh).
	CutLinkEvery int64
	// ConnRate caps each connection's bytes per second from the server (a
	// long-haul TCP connection gets a fraction of the link).
	ConnRate int64
	// LinkRate caps all connections' bytes per second from the server
	// together (the link itself).
	LinkRate int64
	// Delay is added to each direction (a round trip costs 2 × Delay
	// more). Bytes keep flowing meanwhile: it is latency, not a pause.
	Delay time.Duration
}

// Link is a TCP proxy that makes loopback look like another network: a
// rate cap per connection and for the whole link, added latency, and cuts
// every N bytes. It counts what it carries as a [Proxy] does, a byte once
// it is due on the other side.
type Link struct {
	*Proxy
	o    LinkOptions
	cuts atomic.Int64

	linkMu   sync.Mutex
	linkNext time.Time // when the link may carry the next byte

	carriedMu sync.Mutex
	carried   int64 // from the server since the last CutLinkEvery cut
}

// NewLink proxies the TCP address target (host:port).
func NewLink(target string, o LinkOptions) (*Link, error) {
	k := &Link{o: o}
	p, err := newProxy(target, func(_ *Proxy, c, s net.Conn) {
		go k.pipe(c, s, false)
		k.pipe(s, c, true) // the server's side ending (or a cut) ends the connection
	})
	if err != nil {
		return nil, err
	}
	k.Proxy = p
	return k, nil
}

// URL is rawURL (git:// or http://) with its host replaced by the link's.
func (k *Link) URL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.Host = k.Addr
	return u.String()
}

// Down is the bytes carried from the server so far; Cuts the connections
// cut.
func (k *Link) Down() int64 { return k.down.Load() }
func (k *Link) Cuts() int64 { return k.cuts.Load() }

// linkWait reserves n bytes of the link's rate.
func (k *Link) linkWait(n int) {
	if k.o.LinkRate <= 0 {
		return
	}
	k.linkMu.Lock()
	if now := time.Now(); k.linkNext.Before(now.Add(-linkBurst)) {
		k.linkNext = now.Add(-linkBurst)
	}
	at := k.linkNext
	k.linkNext = k.linkNext.Add(time.Duration(int64(n) * int64(time.Second) / k.o.LinkRate))
	k.linkMu.Unlock()
	time.Sleep(time.Until(at))
}

// linkLeft is how many bytes the link carries before its next
// CutLinkEvery cut.
func (k *Link) linkLeft() int64 {
	k.carriedMu.Lock()
	defer k.carriedMu.Unlock()
	return k.o.CutLinkEvery - k.carried
}

// linkCarry counts n bytes from the server and reports whether they end
// the link's CutLinkEvery (then the count starts again).
func (k *Link) linkCarry(n int) bool {
	k.carriedMu.Lock()
	defer k.carriedMu.Unlock()
	k.carried += int64(n)
	if k.carried < k.o.CutLinkEvery {
		return false
	}
	k.carried = 0
	return true
}

// linkBurst is how far a rate cap lets a connection (or the link) catch
// up after it was late: a sleep that overshoots does not lower the rate,
// and a connection idle for longer gets at most this much time's bytes at
// once.
const linkBurst = 20 * time.Millisecond

type piece struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst: from the server (down) with the caps and cuts,
// both ways with the delay.
func (k *Link) pipe(src, dst net.Conn, down bool) {
	line := make(chan piece, 256)
	go func() {
		defer close(line)
		var carried int64
		var next time.Time // when this connection may carry its next byte
		for {
			buf := make([]byte, 16<<10)
			if down && k.o.CutEvery > 0 && int64(len(buf)) > k.o.CutEvery-carried {
				buf = buf[:k.o.CutEvery-carried]
			}
			if down && k.o.CutLinkEvery > 0 {
				buf = buf[:max(1, min(int64(len(buf)), k.linkLeft()))]
			}
			n, err := src.Read(buf)
			if n > 0 {
				if down {
					if k.o.ConnRate > 0 {
						if now := time.Now(); next.Before(now.Add(-linkBurst)) {
							next = now.Add(-linkBurst)
						}
						time.Sleep(time.Until(next))
						next = next.Add(time.Duration(int64(n) * int64(time.Second) / k.o.ConnRate))
					}
					k.linkWait(n)
					carried += int64(n)
				}
				line <- piece{buf[:n], time.Now().Add(k.o.Delay)}
			}
			linkCut := down && n > 0 && k.o.CutLinkEvery > 0 && k.linkCarry(n)
			if down && (k.o.CutEvery > 0 && carried >= k.o.CutEvery || linkCut) {
				line <- piece{due: time.Now().Add(k.o.Delay)} // the cut, after what came before it
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for p := range line {
		time.Sleep(time.Until(p.due))
		if p.data == nil {
			k.cuts.Add(1)
			break
		}
		n := &k.up
		if down {
			n = &k.down
		}
		if !k.pass(dst, p.data, n) {
			break
		}
	}
	if !down {
		closeWrite(dst) // the client is done sending: so is the proxy
	}
	go func() {
		for range line { // let the reader end
		}
	}()
}
