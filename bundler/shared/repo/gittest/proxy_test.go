package gittest

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// Each of the proxies counts as the core does: each direction exactly, the
// connection once, and complete as soon as the client has read what it
// got (the count does not wait for the connection to close).
func TestProxiesCountEveryByte(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const up, down = 300_001, 1<<20 + 7
	got := make(chan int64, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, c)
			got <- n
			c.Write(bytes.Repeat([]byte{'d'}, down))
			c.Close()
		}
	}()
	target := l.Addr().String()
	plain, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	cut, err := NewCutProxy("git://"+target+"/r.git", 0)
	if err != nil {
		t.Fatal(err)
	}
	link, err := NewLink(target, LinkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*Proxy{"NewProxy": plain, "CutProxy": cut.Proxy, "Link": link.Proxy} {
		count := p.Mark()
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(bytes.Repeat([]byte{'u'}, up)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != down {
			t.Fatalf("%s: client read %d bytes (%v), want %d", name, n, err, down)
		}
		if n := <-got; n != up {
			t.Fatalf("%s: server read %d bytes, want %d", name, n, up)
		}
		if w := count(); w != (Traffic{Conns: 1, Up: up, Down: down}) {
			t.Errorf("%s: counted %+v, want 1 connection, %d up, %d down", name, w, up, down)
		}
		c.Close()
		p.Close()
	}
	if link.Down() != down {
		t.Errorf("Link.Down %d, want %d", link.Down(), down)
	}
}
