package repo

import (
	"context"
	"io"
	"net/http"
	"strings"
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

type boundedTransport struct{ base http.RoundTripper }

// boundedClient is c with every response body bounded.
func boundedClient(c *http.Client) *http.Client {
	if _, ok := c.Transport.(boundedTransport); ok {
		return c
	}
	b := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	b.Transport = boundedTransport{base}
	return &b
}

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit, what := int64(maxAdvertisement), "response"
	switch {
	case res.StatusCode/100 != 2:
		// Only a message: the rest is cut off, not an error.
		res.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(res.Body, maxErrorBody), res.Body}
		return res, nil
	case strings.HasSuffix(req.URL.Path, "/info/refs"):
		what = "ref advertisement"
	case strings.HasSuffix(req.URL.Path, "/git-upload-pack"):
		what = "upload-pack response"
		if n, ok := req.Context().Value(bodyLimitKey{}).(int64); ok {
			limit = n
		}
	}
	res.Body = struct {
		io.Reader
		io.Closer
	}{&limitedReader{r: res.Body, left: limit, what: what}, res.Body}
	return res, nil
}
