package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// The upload-pack conversation, over a session (git://, ssh://: one
// connection) or smart HTTP (a GET for the first reply, a POST per
// request). Protocol v0: the first reply is the ref advertisement, then
// one request (wants, haves, "done") is answered by an ACK or NAK and the
// pack.

// conv is one conversation with a git service.
type conv interface {
	// hello reads the server's first reply.
	hello() (*hello, error)
	// request sends one request and returns the reader of its reply.
	request(w *pktWriter) (*pktReader, error)
	// raw is the reader under the last reply's packets (a pack sent
	// without sideband).
	raw() io.Reader
	Close() error
}

// hello is a server's first reply: a v0 ref advertisement.
type hello struct {
	ar *packp.AdvRefs // nil for an empty repository
}

func (h *hello) refs() map[string]plumbing.Hash {
	if h.ar == nil {
		return map[string]plumbing.Hash{}
	}
	return advRefsMap(h.ar)
}

func (h *hello) caps() *capability.List {
	if h.ar == nil {
		return capability.NewList()
	}
	return h.ar.Capabilities
}

// readAdvertisement decodes a v0 ref advertisement from p within its
// budget (go-git's decoder, which reads packet by packet).
func readAdvertisement(p *pktReader) (*hello, error) {
	ar := packp.NewAdvRefs()
	if err := ar.Decode(pktRaw{p}); err != nil {
		if errors.Is(err, packp.ErrEmptyAdvRefs) {
			return &hello{}, nil
		}
		var rerr *RemoteError
		if errors.As(err, &rerr) {
			return nil, err
		}
		return nil, fmt.Errorf("decode ref advertisement: %w", err)
	}
	if f := ar.Capabilities.Get(capability.ObjectFormat); len(f) > 0 && f[0] != "sha1" {
		return nil, fmt.Errorf("repository uses object format %s: only sha1 repositories are supported", serverText([]byte(f[0])))
	}
	return &hello{ar: ar}, nil
}

// pktRaw reads the bytes under p within its budget.
type pktRaw struct{ p *pktReader }

func (r pktRaw) Read(b []byte) (int, error) {
	if r.p.left <= 0 {
		var one [1]byte
		n, err := r.p.r.Read(one[:])
		if n > 0 {
			return 0, r.p.overBudget()
		}
		return 0, err
	}
	if int64(len(b)) > r.p.left {
		b = b[:r.p.left]
	}
	n, err := r.p.r.Read(b)
	r.p.left -= int64(n)
	r.p.n += int64(n)
	return n, err
}

// sessionConv is a conversation over a session.
type sessionConv struct{ s *session }

func (c sessionConv) hello() (*hello, error) {
	c.s.pkt.budget(maxAdvertisement, "ref advertisement", nil)
	h, err := readAdvertisement(c.s.pkt)
	return h, c.s.fail(err)
}

func (c sessionConv) request(w *pktWriter) (*pktReader, error) {
	if err := c.s.send(w); err != nil {
		return nil, err
	}
	c.s.pkt.budget(maxAdvertisement, "response", nil)
	return c.s.pkt, nil
}

func (c sessionConv) raw() io.Reader { return pktRaw{c.s.pkt} }
func (c sessionConv) Close() error   { return c.s.Close() }

// httpConv is a conversation over smart HTTP.
type httpConv struct {
	r       *Remote
	ctx     context.Context
	service string
	res     *http.Response // of the last request
	pkt     *pktReader
}

func (c *httpConv) hello() (*hello, error) {
	body, err := c.r.httpGetInfoRefs(c.ctx, c.service)
	if err != nil {
		return nil, err
	}
	c.setResponse(body)
	c.pkt.budget(maxAdvertisement, "ref advertisement", nil)
	// "# service=git-upload-pack" and a flush come first.
	line, err := c.pkt.line()
	if err != nil {
		return nil, fmt.Errorf("decode ref advertisement: %w", err)
	}
	if line != "# service="+c.service {
		return nil, fmt.Errorf("decode ref advertisement: %w: first line %q", errProtocol, serverText([]byte(line)))
	}
	if kind, _, err := c.pkt.next(); err != nil || kind != pktFlush {
		return nil, fmt.Errorf("decode ref advertisement: %w: no flush after the service line (%v)", errProtocol, err)
	}
	return readAdvertisement(c.pkt)
}

func (c *httpConv) setResponse(res *http.Response) {
	if c.res != nil {
		drainClose(c.res)
	}
	c.res = res
	c.pkt = newPktReader(bufio.NewReaderSize(res.Body, responseBuffer))
}

func (c *httpConv) request(w *pktWriter) (*pktReader, error) {
	res, err := c.r.httpPost(c.ctx, c.service, w.b)
	if err != nil {
		return nil, err
	}
	c.setResponse(res)
	c.pkt.budget(maxAdvertisement, "response", nil)
	return c.pkt, nil
}

func (c *httpConv) raw() io.Reader { return pktRaw{c.pkt} }

func (c *httpConv) Close() error {
	if c.res != nil {
		drainClose(c.res)
		c.res = nil
	}
	return nil
}

// drainClose reads a little of what is left of a body, so the connection
// goes back to the pool, and closes it.
func drainClose(res *http.Response) {
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
}

// conv opens a conversation with service.
func (r *Remote) conv(ctx context.Context, service string) (conv, error) {
	if r.isHTTP() {
		return &httpConv{r: r, ctx: ctx, service: service}, nil
	}
	s, err := r.openSession(ctx, service, false)
	if err != nil {
		return nil, err
	}
	return sessionConv{s}, nil
}

// httpGetInfoRefs GETs info/refs for service.
func (r *Remote) httpGetInfoRefs(ctx context.Context, service string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.baseURL()+"/info/refs?service="+service, nil)
	if err != nil {
		return nil, err
	}
	r.authorize(req)
	res, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		drainClose(res)
		return nil, httpStatusError("GET info/refs", res)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/x-"+service+"-advertisement" {
		drainClose(res)
		return nil, fmt.Errorf("GET info/refs: not a smart git server (content type %q)", serverText([]byte(ct)))
	}
	return res, nil
}

// httpPost POSTs one request to service.
func (r *Remote) httpPost(ctx context.Context, service string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.baseURL()+"/"+service, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.authorize(req)
	req.Header.Set("Content-Type", "application/x-"+service+"-request")
	req.Header.Set("Accept", "application/x-"+service+"-result")
	res, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		drainClose(res)
		return nil, httpStatusError("POST "+service, res)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/x-"+service+"-result" {
		drainClose(res)
		return nil, fmt.Errorf("POST %s: not a smart git server (content type %q)", service, serverText([]byte(ct)))
	}
	return res, nil
}

// uploadRequestV0 is a v0 fetch request: wants (the first with the
// capabilities asked for), haves, "done". No multi_ack: the server answers
// with one ACK or NAK, then the pack. No thin pack: every base is in it.
func uploadRequestV0(caps *capability.List, wants, haves []plumbing.Hash) (*pktWriter, bool) {
	var asked []string
	sideband := false
	for _, c := range []capability.Capability{capability.Sideband64k, capability.OFSDelta, capability.NoProgress} {
		if caps.Supports(c) {
			asked = append(asked, string(c))
			if c == capability.Sideband64k {
				sideband = true
			}
		}
	}
	if caps.Supports(capability.Agent) {
		asked = append(asked, "agent=pullship")
	}
	w := &pktWriter{}
	for i, h := range wants {
		if i == 0 {
			w.line("want " + h.String() + " " + strings.Join(asked, " "))
			continue
		}
		w.line("want " + h.String())
	}
	w.flush()
	for _, h := range haves {
		w.line("have " + h.String())
	}
	w.line("done")
	return w, sideband
}

// packAfterAcksV0 reads the ACK or NAK that precedes a v0 pack and returns
// the pack's reader within limit bytes.
func packAfterAcksV0(c conv, p *pktReader, sideband bool, limit int64) (io.Reader, error) {
	for range 1 << 16 {
		line, err := p.line()
		if err != nil {
			return nil, err
		}
		switch {
		case line == "NAK" || strings.HasPrefix(line, "ACK ") && !strings.Contains(line[4:], " "):
			p.budget(limit+maxUploadPackPrelude, "pack", ErrPackTooLarge)
			if !sideband {
				return c.raw(), nil
			}
			return &sidebandReader{p: p}, nil
		case strings.HasPrefix(line, "ACK "):
			// "ACK <oid> common/ready/continue": multi_ack, not asked for,
			// but harmless.
		case strings.HasPrefix(line, "shallow ") || strings.HasPrefix(line, "unshallow "):
		default:
			return nil, fmt.Errorf("%w: unexpected %q before the pack", errProtocol, serverText([]byte(line)))
		}
	}
	return nil, fmt.Errorf("%w: too many acknowledgements", errProtocol)
}

// httpStatusError is a failed request's status, marked as go-git marks
// authentication, authorization and missing repository failures.
func httpStatusError(op string, res *http.Response) error {
	var kind error
	switch res.StatusCode {
	case http.StatusUnauthorized:
		kind = transport.ErrAuthenticationRequired
	case http.StatusForbidden:
		kind = transport.ErrAuthorizationFailed
	case http.StatusNotFound:
		kind = transport.ErrRepositoryNotFound
	}
	if kind == nil {
		return fmt.Errorf("%s: %s", op, serverText([]byte(res.Status)))
	}
	return fmt.Errorf("%s: %s: %w", op, serverText([]byte(res.Status)), kind)
}
