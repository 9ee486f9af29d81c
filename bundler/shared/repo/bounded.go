package repo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Every HTTP response a remote sends is read through a bound: go-git reads
// the ref advertisement and error bodies whole. boundedTransport wraps the
// client's transport so that go-git's decoders read through limits too.
const (
	// maxErrorBody is what is read of a non-2xx response (a message).
	maxErrorBody = 64 << 10
	// maxUploadPackPrelude bounds an upload-pack response beyond the pack
	// (acknowledgements and sideband framing).
	maxUploadPackPrelude = 1 << 20
)

type bodyLimitKey struct{}

// withBodyLimit sets the bound of the upload-pack response body of
// requests made with ctx.
func withBodyLimit(ctx context.Context, n int64) context.Context {
	return context.WithValue(ctx, bodyLimitKey{}, n)
}

// boundedTransport bounds every response body, abandons a request the
// server makes no progress on for stall ([ErrStalled]), and counts the
// bodies' bytes.
type boundedTransport struct {
	base  http.RoundTripper
	stall time.Duration
	c     *counters
}

// boundedClient is c with every response body bounded and every request
// under the stall timeout.
func boundedClient(c *http.Client, stall time.Duration, cnt *counters) *http.Client {
	b := *c
	base := c.Transport
	if bt, ok := base.(boundedTransport); ok {
		base = bt.base
	}
	if base == nil {
		base = http.DefaultTransport
	}
	b.Transport = boundedTransport{base: base, stall: stall, c: cnt}
	return &b
}

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.c.requests.Add(1)
	ctx, cancel := context.WithCancel(req.Context())
	w := &stallWatch{d: t.stall, cancel: cancel, c: t.c}
	w.timer = time.AfterFunc(t.stall, w.fire)
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedRequestBody{req.Body, w}
	}
	res, err := t.base.RoundTrip(req)
	if err != nil {
		w.timer.Stop()
		cancel()
		return nil, w.explain(err)
	}
	w.timer.Stop()
	limit, what := int64(maxAdvertisement), "response"
	var body io.Reader = &watchedBody{r: res.Body, w: w}
	switch {
	case res.StatusCode/100 != 2:
		// Only a message: the rest is cut off, not an error.
		res.Body = &closeBody{io.LimitReader(body, maxErrorBody), res.Body, cancel}
		return res, nil
	case strings.HasSuffix(req.URL.Path, "/info/refs"):
		what = "ref advertisement"
	case strings.HasSuffix(req.URL.Path, "/git-upload-pack"):
		what = "upload-pack response"
		if n, ok := req.Context().Value(bodyLimitKey{}).(int64); ok {
			limit = n
		}
	}
	res.Body = &closeBody{&limitedReader{r: body, left: limit, what: what}, res.Body, cancel}
	return res, nil
}

// stallWatch cancels a request when its timer fires: the timer runs while
// pullship waits on the network (for the response, for a body's next
// bytes, or for a request body's last piece to be taken).
type stallWatch struct {
	d      time.Duration
	timer  *time.Timer
	cancel context.CancelFunc
	c      *counters
	fired  atomic.Bool
}

func (w *stallWatch) fire() {
	if w.fired.CompareAndSwap(false, true) {
		w.c.stalls.Add(1)
	}
	w.cancel()
}

func (w *stallWatch) explain(err error) error {
	if err != nil && err != io.EOF && w.fired.Load() {
		return fmt.Errorf("%w (%v)", stallError{w.d}, err)
	}
	return err
}

// watchedRequestBody pauses the watch while the body's writer (pullship's
// own pack writer) produces the next piece.
type watchedRequestBody struct {
	io.ReadCloser
	w *stallWatch
}

func (b *watchedRequestBody) Read(p []byte) (int, error) {
	b.w.timer.Stop()
	n, err := b.ReadCloser.Read(p)
	b.w.c.written.Add(int64(n))
	b.w.timer.Reset(b.w.d)
	return n, err
}

// watchedBody runs the watch during each read of a response body.
type watchedBody struct {
	r io.Reader
	w *stallWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.timer.Reset(b.w.d)
	n, err := b.r.Read(p)
	b.w.timer.Stop()
	b.w.c.read.Add(int64(n))
	return n, b.w.explain(err)
}

type closeBody struct {
	io.Reader
	c      io.Closer
	cancel context.CancelFunc
}

func (b *closeBody) Close() error {
	err := b.c.Close()
	b.cancel()
	return err
}

// CloseIdleConnections closes the idle connections of the transport under t.
func (t boundedTransport) CloseIdleConnections() { closeIdle(t.base) }

func closeIdle(rt http.RoundTripper) {
	if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
