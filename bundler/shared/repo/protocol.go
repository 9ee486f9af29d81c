package repo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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

// hello is a server's first reply: a v0 ref advertisement, or a v2
// capability advertisement.
type hello struct {
	ar *packp.AdvRefs // v0; nil for an empty repository
	// v2 are the capabilities of a server speaking protocol v2 (name to
	// value, "" for none); nil for v0.
	v2 map[string]string
	// cached: an HTTP server's v2 capabilities from an earlier request,
	// no GET made.
	cached bool
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

// maxCapabilityLines bounds the lines of a v2 capability advertisement.
const maxCapabilityLines = 256

// readHello reads a server's first reply within the budget of p: "version
// 2" and its capabilities, or a v0 ref advertisement. A server asked for v2
// that does not speak it answers in v0: that is the fallback.
func readHello(p *pktReader) (*hello, error) {
	kind, data, err := p.next()
	if err != nil {
		return nil, fmt.Errorf("decode ref advertisement: %w", err)
	}
	if kind != pktData || string(data) != "version 2\n" {
		// v0: the packet read goes back in front of the rest.
		first := []byte("0000")
		if kind == pktData {
			first = fmt.Appendf(nil, "%04x%s", len(data)+4, data)
		}
		return readAdvertisement(io.MultiReader(bytes.NewReader(first), pktRaw{p}))
	}
	caps := map[string]string{}
	for {
		kind, data, err := p.next()
		if err != nil {
			return nil, fmt.Errorf("decode capability advertisement: %w", err)
		}
		if kind == pktFlush {
			break
		}
		if kind != pktData || len(caps) >= maxCapabilityLines {
			return nil, fmt.Errorf("decode capability advertisement: %w: unexpected %s packet or too many capabilities", errProtocol, kindName(kind))
		}
		k, v, _ := strings.Cut(strings.TrimSuffix(string(data), "\n"), "=")
		caps[k] = v
	}
	if f, ok := caps["object-format"]; ok && f != "sha1" {
		return nil, fmt.Errorf("repository uses object format %s: only sha1 repositories are supported", serverText([]byte(f)))
	}
	return &hello{v2: caps}, nil
}

// readAdvertisement decodes a v0 ref advertisement (go-git's decoder, which
// reads packet by packet).
func readAdvertisement(r io.Reader) (*hello, error) {
	ar := packp.NewAdvRefs()
	if err := ar.Decode(r); err != nil {
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
	h, err := readHello(c.s.pkt)
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
	v2      bool           // ask for protocol v2
	noCache bool           // make the GET even when v2 capabilities are known
	res     *http.Response // of the last request
	pkt     *pktReader
}

func (c *httpConv) hello() (*hello, error) {
	if c.v2 && !c.noCache {
		if caps := c.r.httpV2.Load(); caps != nil {
			return &hello{v2: *caps, cached: true}, nil
		}
	}
	body, err := c.r.httpGetInfoRefs(c.ctx, c.service, c.v2)
	if err != nil {
		return nil, err
	}
	c.setResponse(body)
	c.pkt.budget(maxAdvertisement, "ref advertisement", nil)
	// "# service=git-upload-pack" and a flush come first in v0 (git
	// leaves them out in v2, other servers may not).
	if b, err := c.pkt.r.(*bufio.Reader).Peek(4 + len("# service=")); err == nil && string(b[4:]) == "# service=" {
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
	} else if !c.v2 {
		return nil, fmt.Errorf("decode ref advertisement: %w: no service line", errProtocol)
	}
	h, err := readHello(c.pkt)
	if err == nil && c.v2 {
		if h.v2 != nil {
			c.r.httpV2.Store(&h.v2)
		} else {
			c.r.httpV2.Store(nil)
		}
	}
	return h, err
}

func (c *httpConv) setResponse(res *http.Response) {
	if c.res != nil {
		drainClose(c.res)
	}
	c.res = res
	c.pkt = newPktReader(bufio.NewReaderSize(res.Body, responseBuffer))
}

func (c *httpConv) request(w *pktWriter) (*pktReader, error) {
	res, err := c.r.httpPost(c.ctx, c.service, w.b, c.v2)
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

// conv opens a conversation with service, asking for protocol v2 if v2.
func (r *Remote) conv(ctx context.Context, service string, v2 bool) (conv, error) {
	if r.isHTTP() {
		return &httpConv{r: r, ctx: ctx, service: service, v2: v2}, nil
	}
	s, err := r.openSession(ctx, service, v2)
	if err != nil {
		return nil, err
	}
	return sessionConv{s}, nil
}

// httpGetInfoRefs GETs info/refs for service.
func (r *Remote) httpGetInfoRefs(ctx context.Context, service string, v2 bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.baseURL()+"/info/refs?service="+service, nil)
	if err != nil {
		return nil, err
	}
	r.authorize(req)
	if v2 {
		req.Header.Set("Git-Protocol", "version=2")
	}
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
func (r *Remote) httpPost(ctx context.Context, service string, body []byte, v2 bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.baseURL()+"/"+service, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.authorize(req)
	if v2 {
		req.Header.Set("Git-Protocol", "version=2")
	}
	req.Header.Set("Content-Type", "application/x-"+service+"-request")
	req.Header.Set("Accept", "application/x-"+service+"-result")
	res, err := r.http.Do(req)
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		drainClose(res)
		return nil, &httpReplyError{httpStatusError("POST "+service, res)}
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/x-"+service+"-result" {
		drainClose(res)
		return nil, &httpReplyError{fmt.Errorf("POST %s: not a smart git server (content type %q)", service, serverText([]byte(ct)))}
	}
	return res, nil
}

// uploadRequestV0 is a v0 fetch request: wants (the first with the
// capabilities asked for), haves, "done". No multi_ack: the server answers
// with an ACK (repeated for a have it knew as common already) or a NAK,
// then the pack. No thin pack: every base is in it. A depth above 0 asks for the wants' history that deep ("deepen", which
// counts from the wants whatever the client holds), the client's shallow
// commits named: the server first answers with its "shallow" and
// "unshallow" lines (see readShallowUpdate).
func uploadRequestV0(caps *capability.List, wants, haves, shallow []plumbing.Hash, depth int) (*pktWriter, bool) {
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
	if depth > 0 && caps.Supports(capability.Shallow) {
		asked = append(asked, string(capability.Shallow))
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
	if depth > 0 {
		for _, h := range shallow {
			w.line("shallow " + h.String())
		}
		w.line("deepen " + strconv.Itoa(depth))
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
			return &sidebandReader{p: p, acks: true}, nil
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

// httpReplyError is a POST the server answered with an error status or
// something else than a git reply.
type httpReplyError struct{ err error }

func (e *httpReplyError) Error() string { return e.err.Error() }
func (e *httpReplyError) Unwrap() error { return e.err }

// Protocol v2 (gitprotocol-v2(5)): go-git v5 has no client for it, so the
// two commands pullship needs are written here. ls-refs lists only the
// refs under the prefixes asked for: an idle poll costs the same whatever
// the number of status branches. fetch names wants and haves without the
// whole ref advertisement before it.

// v2Request starts a v2 command with the capabilities the server wants
// echoed.
func v2Request(h *hello, command string) *pktWriter {
	w := &pktWriter{}
	w.line("command=" + command)
	if _, ok := h.v2["agent"]; ok {
		w.line("agent=pullship")
	}
	if _, ok := h.v2["object-format"]; ok {
		w.line("object-format=sha1")
	}
	w.delim()
	return w
}

// maxPrefixes bounds the ref prefixes of one ls-refs (git ignores more
// than 65,536 and lists everything).
const maxPrefixes = 4096

// lsRefsV2 lists the refs under prefixes (every ref without any).
func lsRefsV2(c conv, h *hello, prefixes []string) (map[string]plumbing.Hash, error) {
	if _, ok := h.v2["ls-refs"]; !ok {
		return nil, fmt.Errorf("%w: the server speaks v2 without ls-refs", errProtocol)
	}
	w := v2Request(h, "ls-refs")
	if len(prefixes) <= maxPrefixes {
		for _, p := range prefixes {
			if p == "" || strings.ContainsAny(p, "\n\x00") {
				return nil, fmt.Errorf("ref prefix %q", p)
			}
			w.line("ref-prefix " + p)
		}
	}
	w.flush()
	p, err := c.request(w)
	if err != nil {
		return nil, err
	}
	p.budget(maxAdvertisement, "ref list", nil)
	return readRefListV2(p)
}

// readRefListV2 reads an ls-refs reply: "<oid> <name>[ <attribute>]*"
// lines up to a flush.
func readRefListV2(p *pktReader) (map[string]plumbing.Hash, error) {
	refs := map[string]plumbing.Hash{}
	for {
		kind, data, err := p.next()
		if err != nil {
			return nil, fmt.Errorf("decode ref list: %w", endedEarly(err))
		}
		if kind == pktFlush {
			return refs, nil
		}
		if kind != pktData {
			return nil, fmt.Errorf("decode ref list: %w: unexpected %s packet", errProtocol, kindName(kind))
		}
		line := strings.TrimSuffix(string(data), "\n")
		oid, rest, ok := strings.Cut(line, " ")
		name, _, _ := strings.Cut(rest, " ")
		h, valid := parseHash(oid)
		if !ok || !valid || name == "" {
			if strings.HasPrefix(line, "unborn ") {
				continue
			}
			return nil, fmt.Errorf("decode ref list: %w: line %q", errProtocol, serverText(data))
		}
		refs[name] = h
	}
}

func parseHash(s string) (plumbing.Hash, bool) {
	if len(s) != 40 {
		return plumbing.ZeroHash, false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return plumbing.ZeroHash, false
		}
	}
	return plumbing.NewHash(s), true
}

// fetchRequestV2 asks for a pack of wants without what haves reach, in one
// round ("done"), without thin packs or progress.
func fetchRequestV2(h *hello, wants, haves []plumbing.Hash) *pktWriter {
	w := v2Request(h, "fetch")
	w.line("ofs-delta")
	w.line("no-progress")
	for _, id := range wants {
		w.line("want " + id.String())
	}
	for _, id := range haves {
		w.line("have " + id.String())
	}
	w.line("done")
	w.flush()
	return w
}

// packAfterSectionsV2 reads the sections of a v2 fetch reply before
// "packfile" and returns the pack's reader (within the budget the caller
// set for the whole reply).
func packAfterSectionsV2(p *pktReader) (*sidebandReader, error) {
	for range 1 << 16 {
		line, err := p.line()
		if err != nil {
			return nil, fmt.Errorf("decode fetch reply: %w", endedEarly(err))
		}
		switch line {
		case "packfile":
			return &sidebandReader{p: p}, nil
		case "acknowledgments", "shallow-info", "wanted-refs":
			// Not asked for ("done" leaves out acknowledgments): skipped to
			// the section's end.
			for {
				kind, _, err := p.next()
				if err != nil {
					return nil, fmt.Errorf("decode fetch reply: %w", err)
				}
				if kind == pktDelim {
					break
				}
				if kind != pktData {
					return nil, fmt.Errorf("decode fetch reply: %w: section %s ends with a %s packet", errProtocol, line, kindName(kind))
				}
			}
		default:
			return nil, fmt.Errorf("decode fetch reply: %w: section %q", errProtocol, serverText([]byte(line)))
		}
	}
	return nil, fmt.Errorf("decode fetch reply: %w: too many sections", errProtocol)
}

// endedEarly marks a v2 reply that ended before its flush (a server that
// took the request for v0, and died on it) as a protocol error.
func endedEarly(err error) error {
	if err == io.EOF {
		return fmt.Errorf("%w: the reply ended before its end (%w)", errProtocol, io.ErrUnexpectedEOF)
	}
	return err
}
