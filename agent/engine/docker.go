package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"
)

// aliasRepo names the images LoadImage tags on the containerd image store,
// where the engine identifies images by manifest digest: the tag
// "pullship.local/image:sha256-<config hex>" lets the agent keep addressing
// them by config digest. The classic store never gets this tag.
const aliasRepo = "pullship.local/image"

// chunkWriteBuffer holds one chunk of a streamed request body: 32 KiB, its
// size line and CRLFs.
const chunkWriteBuffer = 32<<10 + 64

// Docker adapts the Docker Engine API client to [Engine].
type Docker struct {
	cli *client.Client
	tr  *http.Transport // under cli's tracing wrapper

	mu sync.Mutex
	// sendAll holds the images whose last load left out layers the engine
	// held and failed: their next load sends every layer.
	sendAll map[string]bool
}

var _ Engine = (*Docker)(nil)

// NewDocker connects to the engine named by the environment (DOCKER_HOST, …,
// else the local socket), negotiating the API version (API 1.41, Docker 20.10,
// and later are supported).
func NewDocker() (*Docker, error) {
	cli, tr, err := dockerClient()
	if err != nil {
		return nil, fmt.Errorf("connect to docker engine: %w", err)
	}
	return &Docker{cli: cli, tr: tr}, nil
}

// dockerClient returns a client for the engine the environment names, and
// the transport under its tracing wrapper.
//
// The client sends a request body in chunks as large as its copy reads:
// 32 KiB (net/http's copy buffer; the tracing wrapper hides a body's
// WriterTo), each flushed as soon as it is written. To a local engine (a
// unix socket) the transport is wrapped in [pieceBodies], which sends image
// streams in pieces of streamPiece instead: a quarter of the writes and half
// the context switches (docs/operations.md, "Why the agent is tuned as it
// is"). Elsewhere, a write buffer
// that holds a whole 32 KiB chunk sends it in one write, where the default
// 4 KiB takes three. WithHost and FromEnv point this transport at the
// engine, as they would the client's own.
func dockerClient() (*client.Client, *http.Transport, error) {
	tr := &http.Transport{WriteBufferSize: chunkWriteBuffer}
	hc := &http.Client{Transport: tr, CheckRedirect: client.CheckRedirect}
	cli, err := client.NewClientWithOpts(client.WithHTTPClient(hc),
		client.WithHost(client.DefaultDockerHost), client.FromEnv, client.WithAPIVersionNegotiation(),
		func(c *client.Client) error {
			// After WithHost and FromEnv, which set the transport's dialer
			// and TLS. Wrapped, tr is no longer the client's to see: it
			// would close tr's idle connections (Docker.Close does), take
			// the scheme from tr's TLS (none: plain HTTP, right for a unix
			// socket) and dial tr's way for exec streams (it dials the
			// socket itself instead).
			tr.DialContext = withSendBuffer(tr.DialContext, engineSendBuffer)
			if strings.HasPrefix(c.DaemonHost(), "unix://") && tr.TLSClientConfig == nil {
				hc.Transport = pieceBodies{tr}
			}
			return nil
		})
	return cli, tr, err
}

// pieceBodies gives request bodies a WriteTo that copies them in pieces of
// streamPiece, so that the HTTP client sends them in chunks that large.
type pieceBodies struct{ next http.RoundTripper }

func (p pieceBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		r := *req // a RoundTripper does not modify its request
		r.Body = pieceBody{req.Body}
		req = &r
	}
	return p.next.RoundTrip(req)
}

type pieceBody struct{ io.ReadCloser }

func (b pieceBody) WriteTo(w io.Writer) (int64, error) { return copyBig(w, b.ReadCloser) }

// engineSendBuffer is the socket send buffer the agent asks for on its
// connections to a local engine. An image stream crosses a machine busy
// with the fetch, and the engine reads the socket 32 KiB at a time: with the
// kernel's default 208 KiB, the agent and the engine wait for each other at
// every turn the scheduler gives either of them. Linux doubles the request,
// so the buffer holds 8 MiB; smaller ones gain less and larger ones nothing
// more (docs/operations.md, "Why the agent is tuned as it is").
const engineSendBuffer = 4 << 20

// withSendBuffer wraps dial so that a connection to a unix socket gets a
// send buffer of n bytes (see [setSendBuffer]). The buffer is a hint: a
// kernel that refuses it leaves the connection as it was.
func withSendBuffer(dial func(ctx context.Context, network, addr string) (net.Conn, error), n int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if u, ok := c.(*net.UnixConn); ok && err == nil {
			_ = setSendBuffer(u, n)
		}
		return c, err
	}
}

// Close releases the client's connections.
func (d *Docker) Close() error {
	d.tr.CloseIdleConnections()
	return d.cli.Close()
}

// Ping checks that the engine answers.
func (d *Docker) Ping(ctx context.Context) error {
	if _, err := d.cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping docker engine: %w", err)
	}
	return nil
}

func aliasRef(id string) string { return aliasRepo + ":" + strings.Replace(id, ":", "-", 1) }

// resolve returns the engine's reference for image id: id itself on the
// classic store, the aliased manifest digest on the containerd store.
func (d *Docker) resolve(ctx context.Context, id string) (string, bool, error) {
	if !ValidImageID(id) {
		return "", false, fmt.Errorf("image %q: not an image ID (sha256:<64 hex>)", id)
	}
	for _, ref := range []string{id, aliasRef(id)} {
		insp, err := d.cli.ImageInspect(ctx, ref)
		if cerrdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("inspect image %s: %w", id, err)
		}
		if ref == id && insp.ID != id {
			continue // a prefix or other match, not this image
		}
		return insp.ID, true, nil
	}
	return "", false, nil
}

// HasImage implements [Engine].
func (d *Docker) HasImage(ctx context.Context, id string) (bool, error) {
	_, ok, err := d.resolve(ctx, id)
	return ok, err
}

func (d *Docker) imageIDs(ctx context.Context) (map[string]bool, error) {
	list, err := d.cli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	ids := make(map[string]bool, len(list))
	for _, im := range list {
		ids[im.ID] = true
	}
	return ids, nil
}

// LoadImage implements [Engine]. The tarball passes through a streaming
// filter that drops its tags and computes its config digest; when that digest
// is not wantID the stream is cut before its end so the engine loads nothing.
// Afterwards the engine's own answer is checked: on the classic image store
// the loaded ID must be wantID; on the containerd store the engine names the
// image by manifest digest, which is accepted because the config it was built
// from has been hashed in passing, and tagged with the alias reference.
//
// On the classic store, a tarball whose manifest.json and config come before
// its layers is loaded layer by layer as it streams (see [stager]), the
// config's digest checked before the first layer goes in; sizes decide
// which layers the image's own load keeps ([stager.plan]). The layers the
// engine holds already, from the first, are sent to the engine in no load
// (their entries in r are read and dropped; opts.Omit lets r's writer leave
// them out); should the engine turn out not to have one after all, the
// load fails, and the next load of wantID sends every layer.
func (d *Docker) LoadImage(ctx context.Context, r io.Reader, wantID string, opts LoadOptions) (err error) {
	if !ValidImageID(wantID) {
		return fmt.Errorf("load image %q: not an image ID (sha256:<64 hex>)", wantID)
	}
	before, err := d.imageIDs(ctx)
	if err != nil {
		return fmt.Errorf("load image %s: %w", wantID, err)
	}
	var sink layerSink
	if d.classicStore(ctx) {
		st := newStager(ctx, d.cli, wantID, opts.Sizes)
		d.mu.Lock()
		st.sendAll = d.sendAll[wantID]
		d.mu.Unlock()
		defer st.cleanup()
		defer func() { err = d.afterHeld(wantID, st.held, err) }()
		sink = st
	}
	pr, pw := io.Pipe()
	filtered := make(chan error, 1)
	var facts saveFacts
	go func() {
		var err error
		facts, err = filterSaveTar(pw, r, func(cfg string) error {
			if cfg != wantID {
				return &ImageMismatchError{Want: wantID, Got: cfg}
			}
			return nil
		}, sink, opts.Omit)
		pw.CloseWithError(err) // nil: clean EOF
		filtered <- err
	}()
	resp, err := d.cli.ImageLoad(ctx, bodyReader(pr), client.ImageLoadWithQuiet(false))
	var out loadOutput
	if err == nil {
		out, err = readLoadOutput(resp.Body, resp.JSON)
		resp.Body.Close()
	}
	pr.CloseWithError(errors.New("engine stopped reading")) // unblock the filter
	if ferr := <-filtered; ferr != nil {
		// The filter's failure is the cause; the engine's is its consequence.
		d.removeNew(ctx, before, out)
		var mm *ImageMismatchError
		if errors.As(ferr, &mm) {
			return mm
		}
		return fmt.Errorf("load image %s: %w", wantID, ferr)
	}
	if err != nil {
		d.removeNew(ctx, before, out)
		return fmt.Errorf("load image %s: %w", wantID, err)
	}
	if len(out.IDs) != 1 || len(out.Names) != 0 {
		d.removeNew(ctx, before, out)
		return fmt.Errorf("load image %s: engine reported images %q and names %q, want exactly one untagged image", wantID, out.IDs, out.Names)
	}
	got := out.IDs[0]
	insp, err := d.cli.ImageInspect(ctx, got)
	if err != nil {
		return fmt.Errorf("load image %s: inspect loaded image %s: %w", wantID, got, err)
	}
	// Either store: the layers the engine registered are the signed
	// config's diff_ids (the filter passed only the config manifest.json
	// names, whose digest it checked).
	if err := checkDiffIDs(facts.Config, insp.RootFS.Layers); err != nil {
		d.removeNew(ctx, before, out)
		return fmt.Errorf("load image %s: %w", wantID, err)
	}
	if got == wantID {
		return nil
	}
	if insp.Descriptor == nil || insp.Descriptor.Digest.String() != got {
		// Classic store with an ID that is not the config digest we hashed.
		d.removeNew(ctx, before, out)
		return &ImageMismatchError{Want: wantID, Got: got}
	}
	if err := d.cli.ImageTag(ctx, got, aliasRef(wantID)); err != nil {
		return fmt.Errorf("load image %s: tag containerd image %s: %w", wantID, got, err)
	}
	return nil
}

// afterHeld notes how a load of wantID that left out the held layers
// layers[:held] ended (err): a failure, which a layer the engine no longer
// has would cause, makes the next load of wantID send every layer, and
// says so.
func (d *Docker) afterHeld(wantID string, held int, err error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case err == nil:
		delete(d.sendAll, wantID)
	case held > 0:
		if d.sendAll == nil {
			d.sendAll = map[string]bool{}
		}
		d.sendAll[wantID] = true
		err = fmt.Errorf("%w (the load left out the %d lower layers the engine held when it began; the next load of the image sends them)", err, held)
	}
	return err
}

// classicStore reports whether the engine keeps images in its classic
// store (graph drivers), where [stager] loads layers ahead of the image. On
// the containerd image store, or when the engine does not say, the image is
// loaded in one piece.
func (d *Docker) classicStore(ctx context.Context) bool {
	info, err := d.cli.Info(ctx)
	if err != nil || info.Driver == "" {
		return false
	}
	for _, kv := range info.DriverStatus {
		if kv[0] == "driver-type" && strings.HasPrefix(kv[1], "io.containerd.snapshotter") {
			return false
		}
	}
	return true
}

// removeNew removes the images the engine reported loading that were not there
// before, so that a refused load leaves nothing behind.
func (d *Docker) removeNew(ctx context.Context, before map[string]bool, out loadOutput) {
	for _, id := range out.IDs {
		if !before[id] {
			_, _ = d.cli.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	}
}

// RemoveImage implements [Engine].
func (d *Docker) RemoveImage(ctx context.Context, id string) error {
	ref, ok, err := d.resolve(ctx, id)
	if err != nil || !ok {
		return err
	}
	if ref != id {
		if _, err := d.cli.ImageRemove(ctx, aliasRef(id), image.RemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove image %s: %w", id, err)
		}
	}
	_, err = d.cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove image %s: %w", id, err)
	}
	return nil
}

// ImagesInUse implements [Engine]. On the containerd store the IDs are
// manifest digests.
func (d *Docker) ImagesInUse(ctx context.Context) ([]string, error) {
	list, err := d.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var ids []string
	for _, c := range list {
		if !slices.Contains(ids, c.ImageID) {
			ids = append(ids, c.ImageID)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Inspect implements [Engine].
func (d *Docker) Inspect(ctx context.Context, name string) (ContainerState, bool, error) {
	c, err := d.cli.ContainerInspect(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return ContainerState{}, false, nil
	}
	if err != nil {
		return ContainerState{}, false, fmt.Errorf("inspect container %s: %w", name, err)
	}
	st := ContainerState{
		ID:           c.ID,
		Name:         strings.TrimPrefix(c.Name, "/"),
		ImageID:      c.Image,
		RestartCount: c.RestartCount,
	}
	if c.Config != nil {
		st.Labels = c.Config.Labels
	}
	if c.State != nil {
		st.Running = c.State.Running
		st.Status = c.State.Status
		if t, err := time.Parse(time.RFC3339Nano, c.State.StartedAt); err == nil && !t.IsZero() && t.Year() > 1 {
			st.StartedAt = t
		}
	}
	return st, true, nil
}

// Run implements [Engine].
func (d *Docker) Run(ctx context.Context, spec ContainerSpec) (string, error) {
	if spec.Name == "" {
		return "", errors.New("run container: no name")
	}
	if !ValidRestartPolicy(spec.RestartPolicy) {
		return "", fmt.Errorf("run container %s: restart policy %q not one of no, always, unless-stopped, on-failure", spec.Name, spec.RestartPolicy)
	}
	ref, ok, err := d.resolve(ctx, spec.Image)
	if err != nil {
		return "", fmt.Errorf("run container %s: %w", spec.Name, err)
	}
	if !ok {
		return "", fmt.Errorf("run container %s: image %s not loaded", spec.Name, spec.Image)
	}
	exposed, bindings, err := nat.ParsePortSpecs(spec.Ports)
	if err != nil {
		return "", fmt.Errorf("run container %s: ports: %w", spec.Name, err)
	}
	cfg := &container.Config{
		Image:        ref,
		Cmd:          spec.Cmd,
		Entrypoint:   spec.Entrypoint,
		Env:          spec.Env,
		Labels:       spec.Labels,
		Hostname:     spec.Hostname,
		ExposedPorts: exposed,
	}
	policy := spec.RestartPolicy
	if policy == "" {
		policy = "no"
	}
	hc := &container.HostConfig{
		Binds:         spec.Binds,
		PortBindings:  bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(policy)},
		NetworkMode:   container.NetworkMode(spec.Network),
	}
	created, err := d.cli.ContainerCreate(ctx, cfg, hc, nil, nil, spec.Name)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", spec.Name, err)
	}
	if err := d.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		// Leave nothing half-made; a fresh context because ctx may be the cause.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = d.cli.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
		return "", fmt.Errorf("start container %s: %w", spec.Name, err)
	}
	return created.ID, nil
}

func stopOpts(timeout time.Duration) container.StopOptions {
	secs := int((timeout + time.Second - 1) / time.Second)
	return container.StopOptions{Timeout: &secs}
}

// Start implements [Engine].
func (d *Docker) Start(ctx context.Context, name string) error {
	if err := d.cli.ContainerStart(ctx, name, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", name, err)
	}
	return nil
}

// Stop implements [Engine].
func (d *Docker) Stop(ctx context.Context, name string, timeout time.Duration) error {
	if err := d.cli.ContainerStop(ctx, name, stopOpts(timeout)); err != nil {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	return nil
}

// Restart implements [Engine].
func (d *Docker) Restart(ctx context.Context, name string, timeout time.Duration) error {
	if err := d.cli.ContainerRestart(ctx, name, stopOpts(timeout)); err != nil {
		return fmt.Errorf("restart container %s: %w", name, err)
	}
	return nil
}

// Remove implements [Engine].
func (d *Docker) Remove(ctx context.Context, name string, timeout time.Duration) error {
	err := d.cli.ContainerStop(ctx, name, stopOpts(timeout))
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove container %s: stop: %w", name, err)
	}
	err = d.cli.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	return nil
}

// Rename implements [Engine].
func (d *Docker) Rename(ctx context.Context, name, newName string) error {
	if err := d.cli.ContainerRename(ctx, name, newName); err != nil {
		return fmt.Errorf("rename container %s to %s: %w", name, newName, err)
	}
	return nil
}

// Exec implements [Engine].
func (d *Docker) Exec(ctx context.Context, name string, argv []string, timeout time.Duration) (ExecResult, error) {
	var res ExecResult
	if len(argv) == 0 {
		return res, fmt.Errorf("exec in container %s: empty command", name)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ex, err := d.cli.ContainerExecCreate(ctx, name, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return res, fmt.Errorf("exec %q in container %s: %w", argv[0], name, err)
	}
	hj, err := d.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return res, fmt.Errorf("exec %q in container %s: %w", argv[0], name, err)
	}
	stop := context.AfterFunc(ctx, hj.Close) // unblock the read at the deadline
	defer stop()
	out := &capWriter{max: MaxExecOutput}
	_, err = stdcopy.StdCopy(out, out, hj.Reader)
	hj.Close()
	res.Output, res.Truncated = out.buf, out.over
	if ctx.Err() != nil {
		return res, fmt.Errorf("exec %q in container %s: no exit within %v: %w", argv[0], name, timeout, ctx.Err())
	}
	if err != nil {
		return res, fmt.Errorf("exec %q in container %s: read output: %w", argv[0], name, err)
	}
	// The stream ends when the process closes its output; its exit status
	// follows shortly after.
	for {
		in, err := d.cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return res, fmt.Errorf("exec %q in container %s: %w", argv[0], name, err)
		}
		if !in.Running {
			res.ExitCode = in.ExitCode
			return res, nil
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("exec %q in container %s: no exit within %v: %w", argv[0], name, timeout, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// capWriter keeps the first max bytes written and discards the rest.
type capWriter struct {
	buf  []byte
	max  int
	over bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	n := min(len(p), w.max-len(w.buf))
	w.buf = append(w.buf, p[:n]...)
	if n < len(p) {
		w.over = true
	}
	return len(p), nil
}

// Events implements [Engine].
func (d *Docker) Events(ctx context.Context) (<-chan Event, <-chan error) {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", LabelNode),
		filters.Arg("event", "start"),
		filters.Arg("event", "die"),
		filters.Arg("event", "restart"),
	)
	msgs, errs := d.cli.Events(ctx, events.ListOptions{Filters: f})
	out := make(chan Event)
	outErr := make(chan error, 1)
	go func() {
		defer close(out)
		defer close(outErr)
		for {
			select {
			case m := <-msgs:
				ev := Event{
					Action:      string(m.Action),
					ContainerID: m.Actor.ID,
					Name:        m.Actor.Attributes["name"],
					Labels:      m.Actor.Attributes,
					Time:        time.Unix(0, m.TimeNano),
				}
				select {
				case out <- ev:
				case <-ctx.Done():
					outErr <- ctx.Err()
					return
				}
			case err := <-errs:
				if err == nil {
					err = errors.New("stream ended")
				}
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				outErr <- fmt.Errorf("docker events: %w", err)
				return
			}
		}
	}()
	return out, outErr
}

// EnsureNetwork implements [Engine].
func (d *Docker) EnsureNetwork(ctx context.Context, name, subnet string) error {
	var want netip.Prefix
	var ipam *network.IPAM
	if subnet != "" {
		var err error
		want, err = netip.ParsePrefix(subnet)
		if err != nil || !want.Addr().Is4() {
			return fmt.Errorf("network %s: subnet %q is not an IPv4 CIDR", name, subnet)
		}
		want = want.Masked()
		ipam = &network.IPAM{Config: []network.IPAMConfig{{Subnet: want.String()}}}
	}
	n, err := d.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if cerrdefs.IsNotFound(err) {
		_, err = d.cli.NetworkCreate(ctx, name, network.CreateOptions{
			Driver: "bridge",
			IPAM:   ipam,
			Labels: map[string]string{"pullship": "1"},
		})
		if err != nil && !cerrdefs.IsConflict(err) {
			return fmt.Errorf("create network %s: %w", name, err)
		}
		if err == nil {
			return nil
		}
		n, err = d.cli.NetworkInspect(ctx, name, network.InspectOptions{}) // lost a race: check theirs
	}
	if err != nil {
		return fmt.Errorf("inspect network %s: %w", name, err)
	}
	if n.Driver != "bridge" {
		return fmt.Errorf("network %s exists with driver %q, want bridge", name, n.Driver)
	}
	if subnet == "" {
		return nil
	}
	for _, c := range n.IPAM.Config {
		if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Masked() == want {
			return nil
		}
	}
	return fmt.Errorf("network %s exists without subnet %s; remove it or change the manifest", name, want)
}

// ConnectNetwork implements [Engine].
func (d *Docker) ConnectNetwork(ctx context.Context, netName, name, ipv4 string) error {
	ip, err := netip.ParseAddr(ipv4)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("connect container %s to network %s: %q is not an IPv4 address", name, netName, ipv4)
	}
	cur, ok, err := d.Connected(ctx, name, netName)
	if err != nil {
		return err
	}
	if ok && cur == ip.String() {
		return nil
	}
	if ok {
		if err := d.cli.NetworkDisconnect(ctx, netName, name, true); err != nil {
			return fmt.Errorf("disconnect container %s from network %s (address %s): %w", name, netName, cur, err)
		}
	}
	err = d.cli.NetworkConnect(ctx, netName, name, &network.EndpointSettings{
		IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip.String()},
	})
	if err != nil {
		// Another connect of the same container may have won the race
		// (the event watcher and an apply both attach on start): what
		// counts is the address the container holds now.
		if cur, ok, cerr := d.Connected(ctx, name, netName); cerr == nil && ok && cur == ip.String() {
			return nil
		}
		return fmt.Errorf("connect container %s to network %s as %s: %w", name, netName, ip, err)
	}
	return nil
}

// Connected implements [Engine].
func (d *Docker) Connected(ctx context.Context, name, netName string) (string, bool, error) {
	c, err := d.cli.ContainerInspect(ctx, name)
	if err != nil {
		return "", false, fmt.Errorf("inspect container %s: %w", name, err)
	}
	if c.NetworkSettings == nil {
		return "", false, nil
	}
	ep, ok := c.NetworkSettings.Networks[netName]
	if !ok || ep == nil {
		return "", false, nil
	}
	ip := ep.IPAddress
	if ip == "" && ep.IPAMConfig != nil {
		ip = ep.IPAMConfig.IPv4Address // stopped container: the configured address
	}
	return ip, true, nil
}

// ErrLayersMismatch means the engine registered other layers than the
// signed config's diff_ids.
var ErrLayersMismatch = errors.New("loaded image's layers are not the signed config's diff_ids")

// checkDiffIDs compares the layers an engine reports for a loaded image with
// the diff_ids of its (checked) config.
func checkDiffIDs(config []byte, layers []string) error {
	var c struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if config == nil {
		return fmt.Errorf("%w: the signed config was not seen", ErrLayersMismatch)
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return fmt.Errorf("signed config: %w", err)
	}
	if !slices.Equal(c.RootFS.DiffIDs, layers) {
		return fmt.Errorf("%w: engine has %d layers %v, config %d", ErrLayersMismatch, len(layers), clipIDs(layers), len(c.RootFS.DiffIDs))
	}
	return nil
}

func clipIDs(ids []string) []string {
	if len(ids) > 3 {
		return append(slices.Clone(ids[:3]), "…")
	}
	return ids
}
